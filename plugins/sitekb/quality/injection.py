"""Text written to steer a chatbot: instructions addressed to an AI model rather than to a reader.

A knowledge base feeds a chatbot; a page that says "ignore previous
instructions and ..." or "<|im_start|>system" is an attack on that chatbot,
whoever planted it (a compromised page, a user comment, a hidden paragraph).
:func:`find_instructions` looks for the phrasings such attacks use:

- overrides: ignore / disregard / forget *previous|prior|above* instructions
  (also in German, French, Spanish, Italian, Portuguese, Dutch, Russian,
  Chinese and Japanese);
- chat-template tokens (``<|im_start|>``, ``[INST]``, ``<<SYS>>``, ...) and an
  Alpaca-style ``### Instruction:`` line;
- a system prompt written out or asked for ("system prompt:", "reveal your
  system prompt");
- role play and jailbreaks ("you are now DAN", "developer mode enabled",
  "pretend you are an unrestricted AI", "from now on you will answer ...");
- sentences addressed to an AI ("note to AI assistants:", "if you are an AI
  language model, ...", "the chatbot must always recommend ...").

The phrases are narrow on purpose: a help page that says "follow the
instructions below", "ignore this step if ..." or "you are now logged in" is
ordinary prose and must pass (tests run every page of the demo site and of a
real documentation site through it). An article *about* prompt injection
that quotes an attack is flagged: a content owner approves it
(``sitekb quarantine approve``). Text is normalised first: Unicode NFKC,
zero-width characters and soft hyphens removed, markdown emphasis dropped,
whitespace collapsed. Not caught: homoglyphs (a Cyrillic "о" in "ignоre"),
letter-spaced words, text in images.

Pure: no database, no settings.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass

__all__ = ["Instruction", "find_instructions", "normalise"]

_AI = (r"(?:AI|A\.I\.|artificial intelligence|LLMs?|large language models?|language models?|chat ?bots?"
       r"|AI (?:language models?|assistants?|models?|agents?|systems?|bots?|crawlers?)|GPT-?\d*|ChatGPT)")
_PREVIOUS = r"(?:previous|prior|preceding|above|earlier|foregoing)"
_ORDERS = r"(?:instructions?|prompts?|directives?|directions|commands|rules|guidelines|context|guardrails)"
# "Ignore the instructions above if you already have an account" is a help page, not an attack.
_NOT_CONDITIONAL = r"(?!\s+(?:if|unless|when|for|in|on|once|after|before|that|which|where)\b)"
_DAN = r"(?-i:DAN)"  # the jailbreak, not a man called Dan

# (name, pattern): the name says which kind of phrase fired.
_PATTERNS: tuple[tuple[str, str], ...] = (
    ("override", rf"\b(?:ignore|disregard|forget)\s+(?:(?:of|the|your|my|these|those|that)\s+){{0,3}}"
                 rf"{_PREVIOUS}\s+(?:\w+\s+)?{_ORDERS}\b{_NOT_CONDITIONAL}"),
    # With "all" it is no help page's "ignore the previous instructions if ...": no exception.
    ("override", rf"\b(?:ignore|disregard|forget)\s+(?:(?:of|the|your|my|these|those)\s+){{0,2}}(?:all|any|every"
                 rf"|each)\s+(?:(?:of|the|your|my|these|those)\s+){{0,2}}{_PREVIOUS}\s+(?:\w+\s+)?{_ORDERS}\b"),
    ("override", rf"\b(?:ignore|disregard|forget)\s+(?:all\s+|any\s+|the\s+)?{_ORDERS}\s+(?:above|before\s+this)\b"
                 rf"{_NOT_CONDITIONAL}"),
    ("override", r"\b(?:disregard|ignore|forget)\s+(?:all|everything|anything)\s+(?:(?:you\s+)?(?:were|have\s+been"
                 r"|'ve\s+been)\s+(?:told|given|instructed)|prior\b|previous\b|above\b)"),
    ("override", rf"\b(?:do\s+not|don't|never)\s+follow\s+(?:the\s+|your\s+|any\s+)?(?:previous|prior|original"
                 rf"|system)\s+(?:instructions|prompt|rules)\b{_NOT_CONDITIONAL}"),
    ("chat template", r"<\|\s*(?:im_start|im_end|im_sep|system|user|assistant|endoftext|begin_of_text"
                      r"|end_of_text|start_header_id|end_header_id|eot_id|eom_id)\s*\|>"),
    ("chat template", r"\[/?INST\]|<</?SYS>>|<start_of_turn>|<end_of_turn>"),
    ("chat template", r"(?m)^\s*#{2,4}\s*(?:Instruction|System(?: Prompt)?)\s*:"),
    ("system prompt", r"\bsystem\s+(?:prompt|message)\s*:"),
    ("system prompt", r"\b(?:reveal|print|repeat|output|show|display|leak|disclose|tell\s+me)\s+(?:me\s+)?"
                      r"(?:your|the)\s+(?:(?:full|entire|original|initial|hidden|secret)\s+)?(?:system\s+prompt"
                      r"|system\s+instructions|initial\s+instructions|hidden\s+instructions)"),
    ("system prompt", r"\b(?:begin|end|start)\s+of\s+(?:the\s+)?(?:system|hidden|secret)\s+(?:prompt|instructions)\b"),
    ("role play", rf"\byou\s+are\s+(?:now|no\s+longer)\s+(?:an?\s+|the\s+|in\s+)?(?:{_DAN}|jailbroken|unrestricted"
                  rf"|unfiltered|uncensored|developer\s+mode|(?:different|new|unrestricted|unfiltered|evil)\s+"
                  rf"(?:AI|assistant|model|chat ?bot)|{_AI}\b|bound\s+by\s+(?:any\s+|the\s+|your\s+|its\s+)?"
                  r"(?:rules|guidelines|restrictions|content\s+polic(?:y|ies)|instructions)|free\s+(?:from|of)\s+"
                  r"(?:all\s+|any\s+)?(?:rules|restrictions|guidelines|filters))"),
    ("role play", rf"\b{_DAN}\s+mode\b|\bdo\s+anything\s+now\b.{{0,20}}\b{_DAN}\b|\b{_DAN}\b.{{0,40}}"
                  r"\bdo\s+anything\s+now\b"),
    ("role play", rf"\b(?:pretend|imagine)\s+(?:that\s+)?(?:to\s+be|you\s+are|you're)\s+(?:an?\s+)?(?:\w+\s+)?"
                  rf"(?:{_AI}|unrestricted|unfiltered|uncensored|jailbroken|{_DAN})\b"),
    ("role play", rf"\b(?:act|behave|respond)\s+as\s+(?:an?\s+)?(?:unrestricted|unfiltered|uncensored|jailbroken"
                  rf"|{_DAN}\b)"),
    ("role play", r"\bfrom\s+now\s+on,?\s+you\s+(?:are|will|must|shall)\s+(?:act|respond|answer|reply|behave"
                  rf"|pretend|ignore|only\s+(?:answer|respond|reply|say)|be\s+(?:an?\s+)?(?:{_AI}|{_DAN}))\b"),
    ("addressed to an AI", rf"\b(?:note|message|instructions?|attention|reminder|notice)\s+(?:to|for)\s+"
                           rf"(?:all\s+|any\s+|the\s+)?{_AI}\s*(?:[:!]|,\s+(?:you|please|ignore|always|never|do)\b"
                           r"|\s+[\-\u2013\u2014]\s|\s+(?:reading|processing|summari[sz]ing|indexing|crawling"
                           r"|scraping)\b)"),
    ("addressed to an AI", rf"\b(?:if|when|while)\s+you\s+are\s+(?:an?\s+)?{_AI}\s*(?:[,:;]|\s+(?:reading"
                           r"|processing|summari[sz]ing|indexing|crawling|scraping|answering|trained|tasked)\b)"),
    ("addressed to an AI", rf"\b(?:as|for)\s+(?:an?\s+|any\s+|all\s+)?{_AI}\s+(?:reading|processing|summari[sz]ing"
                           r"|indexing|crawling)\s+(?:this|these)\b"),
    ("addressed to an AI", rf"\b(?:the|any|all|every)\s+{_AI}\s+(?:must|should|shall|will|has\s+to|needs?\s+to)\s+"
                           r"(?:always\s+|only\s+|never\s+)?(?:recommend|tell|mention|claim|state|refer|ignore"
                           r"|disregard|reveal)\b"),
    ("addressed to an AI", rf"(?:^|[.!?]\s+){_AI}\s*,\s*(?:please\s+)?(?:ignore|disregard|forget|you\s+must"
                           r"|always\s+(?:recommend|say|tell|answer)|recommend|tell\s+(?:the\s+)?users?)\b"),
    # Other languages: the override, which is the attack every translation starts with.
    ("override", r"\b(?:ignorier(?:e|en\s+sie)|vergiss|vergessen\s+sie|missachte)\s+(?:alle\s+)?(?:vorherigen"
                 r"|bisherigen|vorigen|obigen|vorangegangenen|früheren)\s+(?:Anweisungen|Anweisung|Instruktionen"
                 r"|Befehle)\b"),
    ("override", r"\b(?:ignore[rz]?|oublie[rz]?)\s+(?:toutes\s+)?(?:les\s+|tes\s+|vos\s+)?(?:instructions|consignes"
                 r"|directives)\s+(?:précédentes|antérieures|ci-dessus)"),
    ("override", r"\b(?:ignora|ignore|ignorar|olvida|olvide|olvidar)\s+(?:todas\s+)?(?:las\s+|tus\s+|sus\s+)?"
                 r"(?:instrucciones|indicaciones|órdenes)\s+(?:anteriores|previas)"),
    ("override", r"\b(?:ignora|dimentica)\s+(?:tutte\s+)?(?:le\s+)?(?:istruzioni|indicazioni)\s+precedenti"),
    ("override", r"\b(?:ignore|ignora|esqueça|esqueca)\s+(?:todas\s+)?(?:as\s+)?(?:instruções|instrucoes)"
                 r"\s+(?:anteriores|prévias)"),
    ("override", r"\b(?:negeer|vergeet)\s+(?:alle\s+)?(?:vorige|eerdere|voorgaande)\s+(?:instructies|opdrachten)"),
    ("override", r"(?:игнорируй(?:те)?|забудь(?:те)?|проигнорируй(?:те)?)\s+(?:все\s+)?(?:предыдущие|прошлые"
                 r"|прежние)\s+(?:инструкции|указания|команды)"),
    ("override", r"(?:忽略|忽视|无视|忘记|忘掉)(?:你)?(?:之前|以前|先前|上面|上述|前面)?(?:的)?(?:所有的?)?(?:指令|指示)"),
    ("override", r"(?:以前|前|上記|これまで)の(?:すべての|全ての)?(?:指示|命令|プロンプト)を(?:すべて|全て)?(?:無視|忘れ)"),
)

_COMPILED = tuple((name, re.compile(pattern, re.IGNORECASE)) for name, pattern in _PATTERNS)
_INVISIBLE_CHARS = dict.fromkeys(map(ord, "\u200b\u200c\u200d\u2060\ufeff\u00ad\u180e"), None)
_EMPHASIS = re.compile(r"\*{1,3}|(?<!\w)_{1,2}(?=\w)|(?<=\w)_{1,2}(?!\w)|\\(?=[<>\[\]|#*_])")
_HEADING = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.*)$")
EXCERPT_CHARS = 160


@dataclass(frozen=True)
class Instruction:
    """One phrase that reads as an instruction to an AI model, and where it is."""

    kind: str       # override, chat template, system prompt, role play, addressed to an AI
    phrase: str     # the text that matched, normalised
    section: str    # the heading path of the paragraph ("Setup > Linux"); "" before the first heading
    excerpt: str    # the paragraph around the phrase, at most EXCERPT_CHARS

    def as_dict(self) -> dict:
        return {"kind": self.kind, "phrase": self.phrase, "section": self.section, "excerpt": self.excerpt}


def normalise(text: str) -> str:
    """NFKC, without zero-width characters, soft hyphens and markdown emphasis; whitespace collapsed per line."""
    text = unicodedata.normalize("NFKC", text).translate(_INVISIBLE_CHARS)
    text = _EMPHASIS.sub("", text)
    return "\n".join(" ".join(line.split()) for line in text.split("\n"))


def _paragraphs(markdown: str) -> Iterator[tuple[str, str]]:
    """(heading path, paragraph) of ``markdown``; a heading line is a paragraph of its own section."""
    path: list[tuple[int, str]] = []
    block: list[str] = []
    for line in markdown.split("\n"):
        heading = _HEADING.match(line)
        if heading or not line.strip():
            if block:
                yield " > ".join(text for _, text in path), "\n".join(block)
                block = []
            if heading:
                level = len(heading.group(1))
                while path and path[-1][0] >= level:
                    path.pop()
                path.append((level, heading.group(2).strip()))
                yield " > ".join(text for _, text in path), line
            continue
        block.append(line)
    if block:
        yield " > ".join(text for _, text in path), "\n".join(block)


def _excerpt(paragraph: str, start: int, end: int) -> str:
    room = max(0, EXCERPT_CHARS - (end - start)) // 2
    left, right = max(0, start - room), min(len(paragraph), end + room)
    text = " ".join(paragraph[left:right].split())
    return ("…" if left else "") + text + ("…" if right < len(paragraph) else "")


def find_instructions(text: str, limit: int = 5) -> list[Instruction]:
    """Phrases of ``text`` (markdown or plain text) that instruct an AI model, at most ``limit``, in order."""
    found: list[Instruction] = []
    for section, paragraph in _paragraphs(text or ""):
        normal = normalise(paragraph)
        hits = sorted(((m.start(), m.end(), name) for name, pattern in _COMPILED
                       for m in pattern.finditer(normal)), key=lambda hit: hit[0])
        spans: list[list] = []
        for start, end, name in hits:
            if spans and start < spans[-1][1]:  # overlapping phrasings of one sentence are one finding
                spans[-1][1] = max(spans[-1][1], end)
            else:
                spans.append([start, end, name])
        for start, end, name in spans:
            found.append(Instruction(name, " ".join(normal[start:end].split()), normalise(section),
                                     _excerpt(normal, start, end)))
            if len(found) >= limit:
                return found
    return found
