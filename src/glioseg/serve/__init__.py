"""``glioseg serve``: a local web app for clinicians (docs/serve.md).

Upload a case in the browser, segment it on this machine, look at the overlay in a 3-D viewer
(NiiVue, served from the installed nilearn package: no network at run time), read the volumes,
download the results. Nothing leaves the machine.

Layer 9 of the package (docs/architecture.md), just below the CLI:

- :mod:`glioseg.serve.jobs`: the persistent job queue in the data folder (one JSON per job);
- :mod:`glioseg.serve.uploads`: upload checks (types, sizes, zip entries) into a case folder;
- :mod:`glioseg.serve.runner`: the worker that runs one job at a time (prepare, segment, report);
- :mod:`glioseg.serve.app`: the FastAPI application, its safety rules and the page.
"""
