"""What every study page shares: one Jinja2 environment over ``templates/``, and figures embedded
as data URIs, so that a page is one self-contained file that opens offline."""

from __future__ import annotations

import base64
from pathlib import Path

import jinja2


def png_data_uri(png: Path) -> str:
    """The PNG file ``png`` as a ``data:image/png;base64,...`` URI for an ``<img src>``."""
    return "data:image/png;base64," + base64.b64encode(Path(png).read_bytes()).decode("ascii")


def render_page(template_name: str, **context) -> str:
    """Render ``templates/<template_name>`` with ``context``; a name the template uses but the
    context lacks is an error (StrictUndefined), not an empty string on the page."""
    environment = jinja2.Environment(
        loader=jinja2.PackageLoader("vaelab", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    return environment.get_template(template_name).render(**context)
