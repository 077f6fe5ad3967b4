"""Run the notebooks headless and publish them: ``python -m dpclab report``.

* :mod:`~dpclab.lab.report.run` executes each notebook with papermill and writes its HTML page;
* :mod:`~dpclab.lab.report.console` prints the start line (expected duration), status lines and the time left, from
  this machine's last run or the typical times shipped with the package;
* :mod:`~dpclab.lab.report.index` writes ``reports/index.html`` (headline, wall time, figures, provenance),
  :mod:`~dpclab.lab.report.headline` the reproducibility report's headline, :mod:`~dpclab.lab.report.provenance`
  ``reports/provenance.json``;
* :mod:`~dpclab.lab.report.strip` removes outputs from notebooks before they are committed.

>>> from dpclab.lab.report.run import run_report
>>> results = run_report(only=["00"], quick=True)
>>> results[0].status, results[0].seconds
"""
