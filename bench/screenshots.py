"""Screenshots in headless Chromium of what a new user looks at (issue 43): the README's first
screen, an explain report, a tune page, an evaluation figure and optuna-dashboard. Each is saved
as a PNG under ``--out`` to be looked at; ``--report-image`` also writes the README's picture.

Needs Debian's chromium and chromium-driver, and the ``markdown`` package for the README
(``pip install --target /tmp/md markdown``; ``--markdown-path /tmp/md``): neither is an i2x
dependency.

    python bench/screenshots.py --report <explain report/index.html> --tune <tune report/index.html> \\
        --figure <evaluation/confusion.png> --storage sqlite:///mlruns/optuna.db --out bench/out/screens
"""

from __future__ import annotations

import argparse
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CSS = ("body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:880px;margin:24px auto;line-height:1.5;"
       "color:#1f2328;padding:0 16px}pre{background:#f6f8fa;padding:12px;overflow:auto}code{background:#f6f8fa}"
       "img{max-width:100%}h1,h2{border-bottom:1px solid #d0d7de;padding-bottom:.3em}")


def _browser(width: int = 1280, height: int = 900):  # noqa: ANN202
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    profile = tempfile.mkdtemp(prefix="i2x-shots-")
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", f"--user-data-dir={profile}", f"--window-size={width},{height}"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(shutil.which("chromedriver") or "/usr/bin/chromedriver"), options=options)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def readme_page(out: Path, markdown_path: str) -> Path:
    """README.md as GitHub would show it (near enough), its picture included."""
    if markdown_path:
        sys.path.insert(0, markdown_path)
    import markdown

    body = markdown.markdown((ROOT / "README.md").read_text(), extensions=["fenced_code", "tables"])
    page = out / "readme.html"
    page.write_text(f"<html><head><style>{CSS}</style></head><body>{body}</body></html>")
    (out / "docs").mkdir(exist_ok=True)
    if (ROOT / "docs" / "img").is_dir():
        shutil.copytree(ROOT / "docs" / "img", out / "docs" / "img", dirs_exist_ok=True)
    return page


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--report", default="", help="an explain run's report/index.html")
    ap.add_argument("--tune", default="", help="a tune run's report/index.html")
    ap.add_argument("--figure", default="", help="a PNG to look at as a user sees it (the evaluation figure)")
    ap.add_argument("--storage", default="", help="an Optuna storage: optuna-dashboard is started on it")
    ap.add_argument("--markdown-path", default="", help="where the markdown package is installed, for the README")
    ap.add_argument("--report-image", default="", help="also save the report's first screen here (the README's picture)")
    ap.add_argument("--out", default="bench/out/screens")
    args = ap.parse_args()
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    browser = _browser()
    dashboard = None
    try:
        shots = {"readme": readme_page(out, args.markdown_path).as_uri()}
        if args.report:
            shots["report"] = Path(args.report).resolve().as_uri()
        if args.tune:
            shots["tune"] = Path(args.tune).resolve().as_uri()
        if args.figure:
            shots["figure"] = Path(args.figure).resolve().as_uri()
        if args.storage:
            port = _free_port()
            dashboard = subprocess.Popen([sys.executable, "-m", "i2x.cli", "dashboard", "--storage", args.storage, "--port", str(port)],
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
            for _ in range(120):
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=2).close()
                    break
                except OSError:
                    time.sleep(0.5)
            shots["dashboard"] = f"http://127.0.0.1:{port}/dashboard/"
        for name, url in shots.items():
            browser.get(url)
            time.sleep(6 if name == "dashboard" else 1.5)
            path = out / f"{name}.png"
            browser.save_screenshot(str(path))
            print(f"{name}: {path}")
            if name == "report" and args.report_image:
                Path(args.report_image).parent.mkdir(parents=True, exist_ok=True)
                browser.save_screenshot(args.report_image)
    finally:
        browser.quit()
        if dashboard is not None:
            dashboard.terminate()


if __name__ == "__main__":
    main()
