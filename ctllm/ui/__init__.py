"""The Gradio app. Import ``ctllm.ui.app`` for ``build_app``; this package itself stays free of gradio so
``ctllm.ui.starting`` can answer HTTP before gradio has even been imported. Importing it registers the faster
gradio import (see ``ctllm.ui.gradio_import``)."""

from ctllm.ui import gradio_import

gradio_import.install()
