"""What a run produced, read back from MLMD: results, summary, analysis and
the HTML report."""
