#!/usr/bin/env python3
"""The dashboard in a real browser (Tests/NodeTests/GatewayDashboardTests.swift runs it).

Loads every page of a gateway's dashboard, in French and English, in headless Chromium
driven by Selenium; checks each page's status, weight (under 100 KB), that it loads no
resource from anywhere, and runs axe-core (axe-selenium-python) with the WCAG 2.1 A and AA
rules: no violation allowed. Checks the figures shown against the query CLI's certified
answers (`calisson ... --genesis`), and saves a screenshot of each page.

    check_dashboard.py --gateway http://127.0.0.1:PORT --calisson BIN --node HOST:PORT
        --ca CA.pem --genesis GENESIS.json --chain CHAIN --screenshots DIR

Prints a JSON summary (pages, bytes, milliseconds) on success; exits 1 naming every
failure otherwise.
"""
import argparse
import json
import os
import re
import subprocess
import sys
import time
import urllib.request

import axe_core_python
from axe_selenium_python import Axe
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

PAGE_BYTES_MAX = 100 * 1024
WCAG = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]
# axe-selenium-python drives axe-core; the axe-core it bundles (3.1.1) predates the WCAG 2.1
# tags, so it is given the axe-core 4 that PyPI's axe-core-python ships.
AXE_SCRIPT = os.path.join(os.path.dirname(axe_core_python.__file__), "axe.min.js")

failures = []


def fail(message):
    failures.append(message)


def cli(args, *command):
    """A certified answer of the query CLI, as a dict of strings."""
    ran = subprocess.run(
        [args.calisson, *command, "--node", args.node, "--ca", args.ca, "--chain", args.chain, "--genesis", args.genesis,
         "--checkpoints", "none", "--json"],
        capture_output=True, text=True, timeout=120)
    if ran.returncode != 0:
        raise SystemExit(f"calisson {' '.join(command)} failed: {ran.stdout} {ran.stderr}")
    return json.loads(ran.stdout)


def fetch(url):
    started = time.monotonic()
    with urllib.request.urlopen(url, timeout=30) as response:
        body = response.read()
        return response.status, response.headers.get("Content-Type", ""), body, (time.monotonic() - started) * 1000


def figures(driver):
    """The key figures of a page: each <dt> label with its <dd> value."""
    found = {}
    for block in driver.find_elements(By.CSS_SELECTOR, "dl.figures > div"):
        found[block.find_element(By.TAG_NAME, "dt").text.strip()] = block.find_element(By.TAG_NAME, "dd").text.strip()
    return found


def number(text):
    """'1,234' or '−12' (English pages) as an int."""
    cleaned = text.replace(",", "").replace("\u2212", "-").strip()
    if not re.fullmatch(r"-?\d+", cleaned):
        raise ValueError(f"not a number: {text!r}")
    return int(cleaned)


def main():
    parser = argparse.ArgumentParser()
    for name in ["gateway", "calisson", "node", "ca", "genesis", "chain", "screenshots"]:
        parser.add_argument(f"--{name}", required=True)
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument("--chromedriver", default="/usr/bin/chromedriver")
    args = parser.parse_args()
    os.makedirs(args.screenshots, exist_ok=True)

    supply = cli(args, "supply")
    epoch = int(supply["epoch"])
    programmes = [p for p in json.loads(fetch(f"{args.gateway}/open-data/v1/programmes.json")[2])["rows"] if p["epoch"] == epoch - 1]
    programme_ids = sorted({p["programme"] for p in programmes}) or ["tri"]

    pages = []
    for language in ["fr", "en"]:
        pages += [f"/{language}/", f"/{language}/partners", f"/{language}/governance", f"/{language}/validators",
                  f"/{language}/sobriety", f"/{language}/lookup", f"/{language}/lookup?q=1", f"/{language}/lookup?q=not-an-id"]
        pages += [f"/{language}/programmes/{programme}" for programme in programme_ids]

    options = webdriver.ChromeOptions()
    options.binary_location = args.chromium
    for flag in ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1100,1400", "--lang=fr-FR"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(args.chromedriver), options=options)
    driver.set_script_timeout(120)
    summary = []
    try:
        for path in pages:
            url = args.gateway + path
            status, content_type, body, milliseconds = fetch(url)
            if status != 200:
                fail(f"{path}: status {status}")
            if not content_type.startswith("text/html"):
                fail(f"{path}: content type {content_type}")
            if len(body) > PAGE_BYTES_MAX:
                fail(f"{path}: {len(body)} bytes, over the {PAGE_BYTES_MAX} budget")
            if b"<script" in body:
                fail(f"{path}: has a script")
            driver.get(url)
            language = path.split("/")[1]
            if driver.find_element(By.TAG_NAME, "html").get_attribute("lang") != language:
                fail(f"{path}: html lang is not {language}")
            resources = driver.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
            if resources:
                fail(f"{path}: loads resources {resources}")
            axe = Axe(driver, script_url=AXE_SCRIPT)
            axe.inject()
            results = axe.run(options={"runOnly": {"type": "tag", "values": WCAG}})
            for violation in results["violations"]:
                targets = [node["target"] for node in violation["nodes"]][:3]
                fail(f"{path}: axe {violation['id']} ({violation['impact']}): {violation['help']} at {targets}")
            name = path.strip("/").replace("/", "-").replace("?", "-").replace("=", "-") or "index"
            driver.save_screenshot(os.path.join(args.screenshots, f"{name}.png"))
            summary.append({"page": path, "bytes": len(body), "milliseconds": round(milliseconds, 1), "axeViolations": len(results["violations"]),
                            "axePasses": len(results["passes"])})

        # The figures shown are the certified ones (the chain is idle: same checkpoint).
        driver.get(f"{args.gateway}/en/")
        shown = figures(driver)
        for label, field in [("In circulation", "live"), ("Issued since the start", "issued"), ("Spent at partners", "redeemed"),
                             ("Expired", "expired"), ("Melted (community fund)", "sunk")]:
            if number(shown.get(label, "?")) != int(supply[field]):
                fail(f"/en/: {label} shows {shown.get(label)}, calisson supply says {supply[field]}")
        if number(shown.get("Period (epoch) no.", "?")) != epoch:
            fail(f"/en/: the period shown is {shown.get('Period (epoch) no.')}, calisson supply says {epoch}")
        for programme in programme_ids:
            answer = cli(args, "programme", programme)
            driver.get(f"{args.gateway}/en/programmes/{programme}")
            shown = figures(driver)
            for label, field in [("Issued", "issued"), ("Budget", "budget"), ("Spent", "redeemed")]:
                if number(shown.get(label, "?")) != int(answer[field]):
                    fail(f"/en/programmes/{programme}: {label} shows {shown.get(label)}, calisson programme says {answer[field]}")
        if epoch > 0:
            report = cli(args, "report", str(epoch - 1))
            driver.get(f"{args.gateway}/en/partners")
            table = driver.find_element(By.XPATH, "//table[caption[starts-with(., 'Nets per period')]]")
            headers = [cell.text for cell in table.find_elements(By.CSS_SELECTOR, "thead th")]
            column = headers.index(f"Period {epoch - 1}")
            checked = 0
            for row in table.find_elements(By.CSS_SELECTOR, "tbody tr"):
                cells = [cell.text for cell in row.find_elements(By.CSS_SELECTOR, "th, td")]
                expected = report.get(f"net.{cells[0]}")
                if expected is not None:
                    checked += 1
                    if number(cells[column]) != int(expected):
                        fail(f"/en/partners: {cells[0]}'s net shows {cells[column]}, calisson report says {expected}")
            if checked == 0:
                fail("/en/partners: no net checked against calisson report")
    finally:
        driver.quit()

    if failures:
        print("\n".join(failures))
        sys.exit(1)
    print(json.dumps({"pages": summary}, indent=1))


if __name__ == "__main__":
    main()
