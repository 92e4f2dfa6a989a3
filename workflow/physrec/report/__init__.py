"""What the Snakemake report shows of a run: plots of each iteration."""
