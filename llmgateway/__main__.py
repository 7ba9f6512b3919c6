"""`python -m llmgateway`: the same click CLI as the `llmgateway` command."""

from llmgateway.launch import run

run()
