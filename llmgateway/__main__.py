"""`python -m llmgateway`: the same click CLI as the `llmgateway` command."""

from llmgateway.cli.launch import run

run()
