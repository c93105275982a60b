"""The page of ``python serve.py``: a local web app over the Python API (``faces.api.Predictor``).

``store``: the jobs (SQLite, standard library) and their folders under the data directory;
``worker``: the processes that score (the model loaded once per process); ``app``: the FastAPI
application (the HTTP API and the page); ``report``: the HTML and PDF reports of a job. Needs
requirements-serve.txt (FastAPI, uvicorn, python-multipart, fpdf2); the core does not.
"""
