"""One parser per log format. :data:`PARSERS` maps ``--format`` names to parser classes, in
the order autodetection tries them."""

from __future__ import annotations

from llmb.results.parsers.base import Parser
from llmb.results.parsers.llmb import LlmbParser
from llmb.results.parsers.maxtext import MaxtextParser
from llmb.results.parsers.mbridge import MbridgeParser
from llmb.results.parsers.megatron import MegatronParser
from llmb.results.parsers.nemo1 import Nemo1Parser
from llmb.results.parsers.nemo2 import Nemo2Parser
from llmb.results.parsers.torchtitan import TorchtitanParser

PARSERS: dict[str, type[Parser]] = {
    p.name: p
    for p in (LlmbParser, Nemo2Parser, Nemo1Parser, MbridgeParser, MegatronParser, MaxtextParser, TorchtitanParser)
}
FORMATS: tuple[str, ...] = tuple(PARSERS)

__all__ = ["FORMATS", "PARSERS", "Parser"]
