"""Run the notebooks headless and publish them: ``python -m dpclab report``.

* :mod:`~dpclab.lab.report.run` executes each notebook with papermill and writes its HTML page;
* :mod:`~dpclab.lab.report.console` prints the start line (expected duration), status lines and the time left, from
  this machine's last run or the typical times shipped with the package;
* :mod:`~dpclab.lab.report.index` writes ``reports/index.html`` (headline, wall time, figures, provenance),
  :mod:`~dpclab.lab.report.headline` the reproducibility report's headline, :mod:`~dpclab.lab.report.provenance`
  ``reports/provenance.json``;
* :mod:`~dpclab.lab.report.strip` removes outputs from notebooks before they are committed.

>>> from dpclab.lab.report import run_report
>>> results = run_report(only=["00"], quick=True)
>>> results[0].status, results[0].seconds
"""

from dpclab.lab.report.console import (ReportConsole, estimate_remaining, expected_times, load_timings, save_timings, status_line,
                      typical_times)
from dpclab.lab.report.index import write_index
from dpclab.lab.report.provenance import provenance, write_provenance
from dpclab.lab.report.run import (NotebookResult, check_parameters, discover, kernel_config, notebook_title, notebook_warnings,
                  report_parameters, run_notebook, run_report, start_order, to_html)
from dpclab.lab.report.strip import strip_outputs

__all__ = ["strip_outputs", "NotebookResult", "run_report", "run_notebook", "discover", "to_html", "write_index",
           "notebook_warnings", "kernel_config", "report_parameters", "check_parameters",
           "load_timings", "save_timings", "typical_times", "expected_times", "estimate_remaining", "status_line",
           "ReportConsole", "provenance", "write_provenance", "notebook_title", "start_order"]
