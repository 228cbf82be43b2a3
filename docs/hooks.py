"""MkDocs hooks: every page's footer says which release of edgerec it describes, read from the
package (never typed into the docs)."""

from edgerec import __version__


def on_config(config, **kwargs):
    config["copyright"] = f"Describes edgerec {__version__}."
    config["site_name"] = f"edgerec {__version__}"
    return config
