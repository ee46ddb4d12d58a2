"""EsaCL workbench orchestration: executing the notebooks (papermill), sweeps over grids of notebook
executions, HTML reports, and the `esacl` command line.

    from workbench.execute import execute_notebook, write_report
    from workbench.sweep import run_sweep

It sits above both other packages: it executes notebooks that import `widgets` (the dashboards),
which import `esacl` (the library). Neither of those imports this package.
"""
