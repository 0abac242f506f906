"""The ``galore`` command line: explain and models (``main``) with reports (``report``, ``render``), the load tester
(``loadtest``), the in-process evaluation and training commands (``evaluate``, ``proxy``, ``synthetic``,
``train_hardness``) and ``--local`` (``local``). Built on the client library ``galore_client``, which never imports
this package."""
