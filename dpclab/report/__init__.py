"""Run the notebooks headless and publish them: ``python -m dpclab report``.

* :mod:`~dpclab.report.run` executes each notebook with papermill and writes its HTML page;
* :mod:`~dpclab.report.console` prints the start line (expected duration), status lines and the time left, from
  this machine's last run or the typical times shipped with the package;
* :mod:`~dpclab.report.index` writes ``reports/index.html`` (headline, wall time, figures, provenance),
  :mod:`~dpclab.report.headline` the reproducibility report's headline, :mod:`~dpclab.report.provenance`
  ``reports/provenance.json``;
* :mod:`~dpclab.report.strip` removes outputs from notebooks before they are committed.

>>> from dpclab.report import run_report
>>> results = run_report(only=["00"], quick=True)
>>> results[0].status, results[0].seconds
"""

from .console import (ReportConsole, estimate_remaining, expected_times, load_timings, save_timings, status_line,
                      typical_times)
from .index import write_index
from .provenance import provenance, write_provenance
from .run import (NotebookResult, check_parameters, discover, kernel_config, notebook_title, notebook_warnings,
                  report_parameters, run_notebook, run_report, start_order, to_html)
from .strip import strip_outputs

__all__ = ["strip_outputs", "NotebookResult", "run_report", "run_notebook", "discover", "to_html", "write_index",
           "notebook_warnings", "kernel_config", "report_parameters", "check_parameters",
           "load_timings", "save_timings", "typical_times", "expected_times", "estimate_remaining", "status_line",
           "ReportConsole", "provenance", "write_provenance", "notebook_title", "start_order"]
