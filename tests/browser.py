"""A real headless browser for the report tests: Debian's `chromium`, driven over the DevTools protocol on a pipe
(--remote-debugging-pipe: JSON messages ending in a NUL byte, commands on fd 3, replies on fd 4), so no Python
package is needed. `rendered_text` opens a page, runs a script in it (e.g. clicks through the report) and returns the
text the browser renders: the page's and every frame's (document.body.innerText, which is what is laid out on
screen, not the page's source)."""
from __future__ import annotations

import base64
import fcntl
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
NO_BROWSER = "chromium not installed (Debian: apt-get install --no-install-recommends chromium)"


class _Pipe:
    def __init__(self, proc, write_fd: int, read_fd: int):
        self.proc, self.w, self.r, self.buf, self.next_id = proc, write_fd, read_fd, b"", 0

    def call(self, method: str, timeout: float = 30, session: str | None = None, **params):
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params}
        if session:
            msg["sessionId"] = session
        os.write(self.w, json.dumps(msg).encode() + b"\0")
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            while b"\0" in self.buf:
                raw, self.buf = self.buf.split(b"\0", 1)
                reply = json.loads(raw)
                if reply.get("id") == self.next_id:
                    if "error" in reply:
                        raise RuntimeError(f"{method}: {reply['error']}")
                    return reply["result"]
            chunk = os.read(self.r, 1 << 20)
            if not chunk:
                raise RuntimeError(f"chromium closed the pipe during {method}")
            self.buf += chunk
        raise TimeoutError(method)


def _onto_3_and_4(read_fd: int, write_fd: int) -> None:
    """In the child: the command pipe's end as fd 3, the reply pipe's as fd 4 (via fds >= 10, as either may be 3
    or 4 already)."""
    high_r, high_w = fcntl.fcntl(read_fd, fcntl.F_DUPFD, 10), fcntl.fcntl(write_fd, fcntl.F_DUPFD, 10)
    os.dup2(high_r, 3)
    os.dup2(high_w, 4)


def rendered_text(url: str, script: str = "", timeout: float = 60, screenshot: Path | None = None) -> dict[str, str]:
    """{frame url (the page: 'page'): its rendered text} after `script` (an async function body, awaited) ran;
    `screenshot`: also write what the browser shows there (PNG)."""
    cmd_r, cmd_w = os.pipe()
    out_r, out_w = os.pipe()
    profile = tempfile.mkdtemp(prefix="ddflow-chromium-")
    # the child's fd 3 reads our commands, its fd 4 writes the replies
    proc = subprocess.Popen(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--remote-debugging-pipe", "--no-first-run",
         "--disable-dev-shm-usage", "--disable-features=IsolateOrigins,site-per-process",
         f"--user-data-dir={profile}", "about:blank"],
        pass_fds=(3, 4), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        preexec_fn=lambda: _onto_3_and_4(cmd_r, out_w))
    os.close(cmd_r), os.close(out_w)
    pipe = _Pipe(proc, cmd_w, out_r)
    try:
        target = pipe.call("Target.createTarget", url="about:blank")["targetId"]
        session = pipe.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        pipe.call("Page.enable", session=session)
        pipe.call("Page.navigate", session=session, url=url)
        pipe.call("Runtime.evaluate", session=session, timeout=timeout, awaitPromise=True, expression=(
            "new Promise(r => { if (document.readyState === 'complete') r(); else addEventListener('load', r); })"))
        if script:
            pipe.call("Runtime.evaluate", session=session, timeout=timeout, awaitPromise=True,
                      expression=f"(async () => {{ {script} }})()")
        if screenshot:
            shot = pipe.call("Page.captureScreenshot", session=session, format="png")["data"]
            Path(screenshot).write_bytes(base64.b64decode(shot))
        texts = {}
        frames = [pipe.call("Page.getFrameTree", session=session)["frameTree"]]
        while frames:
            node = frames.pop()
            frames += node.get("childFrames", [])
            frame = node["frame"]
            world = pipe.call("Page.createIsolatedWorld", session=session, frameId=frame["id"])["executionContextId"]
            got = pipe.call("Runtime.evaluate", session=session, contextId=world, returnByValue=True,
                            expression="document.body ? document.body.innerText : ''")
            texts["page" if "parentId" not in frame else frame["url"]] = got["result"].get("value", "")
        return texts
    finally:
        os.close(cmd_w)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        os.close(out_r)
        shutil.rmtree(profile, ignore_errors=True)


def file_url(path: str | Path) -> str:
    return Path(path).resolve().as_uri()
