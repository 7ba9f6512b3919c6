"""`python -m llmgateway`: the same click CLI as the `llmgateway` command."""

from llmgateway.cli import main

main(prog_name="llmgateway")
