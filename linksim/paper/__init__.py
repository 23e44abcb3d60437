"""``linksim paper``: the paper's figures and tables (Zheng & Dai, arXiv 2412.20772) and the real-link
results beyond it, from one command. See :func:`run_paper` and ``paper/<budget>.toml``."""
from .items import DATA, FIGURES, TABLES, item_names
from .run import parse_only, run_paper

__all__ = ["DATA", "FIGURES", "TABLES", "item_names", "parse_only", "run_paper"]
