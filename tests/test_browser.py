"""What a person sees: an exported report offline, and the split_digits notebook in JupyterLab.

Both drive Debian's chromium through playwright (which downloads no browser). Without chromium
they skip, saying how to install it; `.ci/run` installs it.
"""

import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

import esacl
from esacl.train import Diverged

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
SHOTS = Path(__file__).resolve().parent.parent / "reports" / "screenshots"

pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists(), reason="chromium not installed: apt-get install --no-install-recommends chromium"
)


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def report_html(tmp_path_factory):
    from workbench.execute import write_report

    out = tmp_path_factory.mktemp("runs")
    small = dict(n_tasks=2, epochs=2, progress=False, out=str(out))
    sparse = esacl.run(
        esacl.RunConfig(method="esacl", landscape=True, slice_steps=5, hessian_iters=3, hutchinson_samples=2, **small)
    )
    dense = esacl.run(esacl.RunConfig(method="derpp", **small))
    with pytest.raises(Diverged):  # named in the report, left out of its table
        esacl.run(esacl.RunConfig(method="ewc", ewc_cap=False, ewc_lambda=1e6, name="stiff", **small))
    return write_report([sparse.path, dense.path, out / "stiff"], out=str(tmp_path_factory.mktemp("reports")))


def visible(page, selector: str) -> int:
    """How many elements match and have a nonzero rendered size."""
    return sum(
        1
        for box in (e.bounding_box() for e in page.query_selector_all(selector))
        if box and box["width"] > 0 and box["height"] > 0
    )


def test_the_report_renders_offline_and_its_controls_work_without_a_kernel(browser, report_html):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    outside, failed, errors = [], [], []

    def block_network(route):  # only the file itself may load: no CDN, no network
        if route.request.url.startswith(("file:", "data:")):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    page.route("**/*", block_network)
    page.on("requestfailed", lambda r: failed.append(r.url[:120]))
    page.on("pageerror", lambda e: errors.append(str(e)[:200]))
    page.goto(f"file://{report_html}")
    page.wait_for_selector(".js-plotly-plot .main-svg", timeout=60_000)
    page.wait_for_timeout(1000)
    too_wide = page.evaluate("""() => [...document.querySelectorAll('.js-plotly-plot')]
        .filter(gd => gd._fullLayout.width > gd.parentElement.getBoundingClientRect().width + 1).length""")
    assert too_wide == 0
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / "report-top.png"))
    page.screenshot(path=str(SHOTS / "report-full.png"), full_page=True)
    assert visible(page, ".js-plotly-plot") >= 10  # comparison figures and one run's dashboards
    assert page.locator(".jupyter-widgets").count() == 0  # no control that needs a kernel
    titles = page.evaluate("() => [...document.querySelectorAll('.js-plotly-plot')].map(gd => gd.layout.title.text)")
    assert len(titles) == len(set(titles))  # each figure once
    assert page.locator("img").count() >= 10  # the selected and removed examples' thumbnails

    # A plotly slider (the loss slice of each task) changes the figure, offline: click the rail's start.
    slider = page.evaluate("""() => [...document.querySelectorAll('.js-plotly-plot')]
        .findIndex(gd => (gd.layout.sliders || []).length > 0 && gd.layout.sliders[0].steps.length > 1)""")
    assert slider >= 0
    shown = lambda: page.evaluate(
        f"() => document.querySelectorAll('.js-plotly-plot')[{slider}].data.map(t => t.visible !== false)"
    )
    before = shown()
    plot = page.locator(".js-plotly-plot").nth(slider)
    plot.scroll_into_view_if_needed()
    rail = plot.locator(".slider-rail-touch-rect").bounding_box()
    page.mouse.click(rail["x"] + 3, rail["y"] + rail["height"] / 2)
    page.wait_for_timeout(500)
    assert shown() != before
    # A legend entry hides its traces, offline.
    plot = page.locator(".js-plotly-plot").nth(0)
    plot.scroll_into_view_if_needed()
    plot.locator(".legendtoggle").first.click()
    page.wait_for_timeout(1000)  # plotly waits out a possible double click
    assert page.evaluate("() => document.querySelectorAll('.js-plotly-plot')[0].data[0].visible") == "legendonly"
    assert outside == [] and failed == [] and errors == []
    page.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# Per visible figure, what a reader cannot read: a title cut off or under the toolbar, subplot titles,
# bar labels or legend entries running into each other, a plotting area squeezed thin. Measured from
# the rendered SVG text boxes.
LAYOUT_PROBLEMS = """() => {
  const box = e => e.getBoundingClientRect();
  const overlap = (a, b) => Math.min(a.right, b.right) - Math.max(a.left, b.left) > 1
    && Math.min(a.bottom, b.bottom) - Math.max(a.top, b.top) > 1;
  const problems = [];
  for (const gd of document.querySelectorAll('.js-plotly-plot')) {
    const svg = gd.querySelector('.main-svg');
    if (!svg || box(svg).width === 0) continue;  // in a tab not shown
    const frame = box(svg), name = (gd.layout.title && gd.layout.title.text || '(untitled)').slice(0, 50);
    for (const title of gd.querySelectorAll('.gtitle, .gtitle-subtitle')) {
      if (!title.textContent) continue;
      const t = box(title);
      if (t.left < frame.left - 1 || t.right > frame.right + 1) problems.push(`${name}: title clipped`);
      const bar = gd.querySelector('.modebar');
      if (bar && box(bar).width > 0 && overlap(t, box(bar))) problems.push(`${name}: toolbar over the title`);
    }
    const axisTitle = e => [...e.classList].some(c => /^[xy][0-9]*title$/.test(c));
    // titles, subplot titles, bar labels, legend entries, text traces
    const labels = '.gtitle, .gtitle-subtitle, .annotation-text, .bartext, .legendtext, .textpoint text';
    const texts = [...gd.querySelectorAll('text')]
      .filter(e => (e.matches(labels) || axisTitle(e)) && e.textContent.trim() && box(e).width > 0);
    for (const e of texts) {
      const b = box(e);
      if (b.left < frame.left - 1 || b.right > frame.right + 1) problems.push(`${name}: "${e.textContent}" clipped`);
    }
    for (let i = 0; i < texts.length; i++)
      for (let j = i + 1; j < texts.length; j++)
        if (overlap(box(texts[i]), box(texts[j])))
          problems.push(`${name}: "${texts[i].textContent}" overlaps "${texts[j].textContent}"`);
    for (const area of gd.querySelectorAll('.draglayer .nsewdrag'))
      if (box(area).width < 120) problems.push(`${name}: a plotting area ${Math.round(box(area).width)} px wide`);
  }
  return problems;
}"""

# The loss curve shows a task's last epoch before that task's end is drawn (the test-loss marker is
# the task end's): the live view did not skip the last epoch of a burst.
LAST_EPOCH_BEFORE_TASK_END = """(epochs) => [...document.querySelectorAll('.js-plotly-plot')].some(gd => {
  const title = gd.layout.title && gd.layout.title.text || '';
  if (!title.startsWith('training loss')) return false;
  const trained = gd.data.filter(t => t.name && t.name.startsWith('task '));
  const ended = gd.data.some(t => t.name && t.name.startsWith('test loss'));
  return trained.length === 1 && trained[0].x.length === epochs && !ended;
})"""


def test_jupyterlab_runs_the_split_digits_notebook_and_its_dashboards_read_at_a_laptops_width(browser, tmp_path):
    import papermill
    from workbench.execute import notebook_path

    # A smaller run than the notebook's, injected as papermill would, into a copy that JupyterLab opens.
    epochs = 2
    papermill.execute_notebook(
        str(notebook_path("split_digits")),
        str(tmp_path / "split_digits.ipynb"),
        # esacl run's full sharpness settings, not the notebook's lighter ones: task 0's end then takes
        # seconds, not half of one, and the state the live check waits for lasts long enough to see.
        parameters=dict(
            n_tasks=2,
            epochs=epochs,
            landscape_batch=256,
            hessian_iters=20,
            hutchinson_samples=10,
            slice_steps=11,
            out=str(tmp_path / "runs"),
            progress=False,
        ),
        prepare_only=True,
    )
    # JupyterLab's first-start question about its news would cover the dashboards' lower right corner.
    settings = tmp_path / "lab-settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)
    (settings / "notification.jupyterlab-settings").write_text('{"fetchNews": "false"}')
    port, token = free_port(), secrets.token_hex(16)  # a fresh token per run: the server runs as root
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jupyterlab",
            "--no-browser",
            f"--LabApp.user_settings_dir={tmp_path / 'lab-settings'}",
            f"--ServerApp.port={port}",
            "--ServerApp.ip=127.0.0.1",
            f"--IdentityProvider.token={token}",
            f"--ServerApp.root_dir={tmp_path}",
            "--ServerApp.open_browser=False",
            "--KernelManager.transport=ipc",  # kernels over unix sockets, not loopback TCP
            "--allow-root",  # CI runs as root
            "--LabApp.news_url=",
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=dict(os.environ, JUPYTER_PLATFORM_DIRS="1"),
    )
    SHOTS.mkdir(parents=True, exist_ok=True)
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.5)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(f"http://127.0.0.1:{port}/lab/tree/split_digits.ipynb?token={token}")
        page.wait_for_selector(".jp-Notebook", timeout=60_000)
        page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle'], .jp-Toolbar", timeout=60_000)
        page.wait_for_function("document.body.innerText.includes('Idle')", timeout=60_000)  # kernel ready
        page.get_by_role("menuitem", name="Run", exact=True).click()  # the Run menu
        page.get_by_text("Run All Cells", exact=True).click()
        try:
            page.wait_for_selector(".jp-OutputArea .lm-TabBar, .jp-OutputArea .widget-tab", timeout=90_000)
            # While task 0's end is measured (seconds without an event), its last epoch is on screen.
            page.wait_for_function(LAST_EPOCH_BEFORE_TASK_END, arg=epochs, timeout=90_000, polling=50)
        except Exception:
            page.screenshot(path=str(SHOTS / "jupyterlab-failed.png"))
            raise
        page.wait_for_function("document.body.innerText.includes('class-IL accuracy R[t][k]')", timeout=120_000)
        assert list((tmp_path / "runs").iterdir())  # the run directory was written
        dashboard = page.locator(".jp-OutputArea .widget-tab").first
        problems = {}
        for width in (1400, 1000):
            page.set_viewport_size({"width": width, "height": 2400})  # tall: every figure of a tab on screen
            for tab in ("Accuracy", "Sharpness", "Masks", "Selections", "Efficiency"):
                dashboard.locator(".lm-TabBar-tab", has_text=tab).click()
                page.wait_for_timeout(1500)  # plotly redraws at the tab's width
                assert visible(page, ".jp-OutputArea .js-plotly-plot") >= 1, tab
                dashboard.screenshot(path=str(SHOTS / f"jupyterlab-{width}-{tab.lower()}.png"))
                problems[f"{tab} at {width} px"] = page.evaluate(LAYOUT_PROBLEMS)
        assert {tab: found for tab, found in problems.items() if found} == {}
        page.close()
    finally:
        server.terminate()  # by its process id
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()


def test_the_report_names_a_diverged_run_and_leaves_it_out_of_the_table(report_html):
    html = Path(report_html).read_text()
    assert "left out (diverged: non-finite training loss): stiff" in html
    assert "(3 runs, " in html and ">ewc<" not in html  # the title counts it; no table row for it
