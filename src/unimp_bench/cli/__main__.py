from unimp_bench.cli import app

app()
