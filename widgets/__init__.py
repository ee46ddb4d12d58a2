"""ipywidgets + plotly dashboards of EsaCL workbench runs, live or from a run directory.

    import widgets
    dash = widgets.RunDashboard()                        # fills live
    record = esacl.run(cfg, callbacks=[dash.callback])
    dash = widgets.RunDashboard.from_run(run_dir)        # the same from a saved run
    dash.figures()                                       # {tab: [plotly Figure, ...]} for reports
    widgets.FlatnessDashboard(rows, records)             # the flatness experiment (esacl.flatness)
    view = widgets.ComparisonView(run_dirs)              # mean ± std over seeds; view.table_html()

Depends on esacl; esacl never imports this package. Figure builders: `widgets.figures`.
"""

from . import figures
from .comparison import frontier_figure, verdict_forest
from .dashboards import (
    AccuracyDashboard,
    ComparisonView,
    EfficiencyDashboard,
    MaskDashboard,
    RunDashboard,
    SelectionDashboard,
    SharpnessDashboard,
)
from .flatness import FlatnessDashboard

__all__ = [
    "AccuracyDashboard",
    "ComparisonView",
    "EfficiencyDashboard",
    "FlatnessDashboard",
    "MaskDashboard",
    "RunDashboard",
    "SelectionDashboard",
    "SharpnessDashboard",
    "figures",
    "frontier_figure",
    "verdict_forest",
]


def _notebook_renderer() -> None:
    """In a kernel: plotly's mimetype renderer (live in JupyterLab) plus plotly.js once (embedded in
    exported HTML), emitted now, at the top level of the importing cell. plotly would otherwise emit
    plotly.js at the first `show()`, which a dashboard makes inside an Output widget: the library
    would then live in that widget's state, and an exported page would have no `Plotly`."""
    from IPython import get_ipython
    import plotly.io as pio

    shell = get_ipython()
    if shell is None or getattr(shell, "kernel", None) is None:
        return
    pio.renderers.default = "plotly_mimetype+notebook"
    pio.renderers._activate_pending_renderers()  # plotly has no public call for "activate now"


_notebook_renderer()
