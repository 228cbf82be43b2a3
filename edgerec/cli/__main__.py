from edgerec.cli import app

app(prog_name="edgerec")
