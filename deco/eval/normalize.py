"""Answer normalisation as the official scorers do it, so that "Two", "2" and "two." all count as the same answer.

`normalize_vqa` follows the VQA evaluation code (vqaEval.py, also the m4c `EvalAIAnswerProcessor`
that LLaVA uses for VQAv2 / VizWiz / TextVQA): lower-case, punctuation removed (or turned into a
space), a period removed unless a digit follows it, number words one..ten mapped to digits, the
articles a / an / the dropped, and apostrophe-less contractions ("dont") restored ("don't").
`normalize_gqa` is LLaVA's convert_gqa_for_eval rule (strip, drop trailing periods, lower-case).
`normalize_text` is the light normalisation used by the caption metrics (lower-case, punctuation
off, whitespace collapsed).
"""

from __future__ import annotations

import re

# Official VQA tables (vqaEval.py): contractions written without the apostrophe -> with it.
CONTRACTIONS: dict[str, str] = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've", "couldnt": "couldn't",
    "couldn'tve": "couldn't've", "couldnt've": "couldn't've", "didnt": "didn't", "doesnt": "doesn't",
    "dont": "don't", "hadnt": "hadn't", "hadnt've": "hadn't've", "hadn'tve": "hadn't've", "hasnt": "hasn't",
    "havent": "haven't", "hed": "he'd", "hed've": "he'd've", "he'dve": "he'd've", "hes": "he's",
    "howd": "how'd", "howll": "how'll", "hows": "how's", "Id've": "I'd've", "I'dve": "I'd've", "Im": "I'm",
    "Ive": "I've", "isnt": "isn't", "itd": "it'd", "itd've": "it'd've", "it'dve": "it'd've", "itll": "it'll",
    "let's": "let's", "maam": "ma'am", "mightnt": "mightn't", "mightnt've": "mightn't've",
    "mightn'tve": "mightn't've", "mightve": "might've", "mustnt": "mustn't", "mustve": "must've",
    "neednt": "needn't", "notve": "not've", "oclock": "o'clock", "oughtnt": "oughtn't",
    "ow's'at": "'ow's'at", "'ows'at": "'ow's'at", "'ow'sat": "'ow's'at", "shant": "shan't",
    "shed've": "she'd've", "she'dve": "she'd've", "she's": "she's", "shouldve": "should've",
    "shouldnt": "shouldn't", "shouldnt've": "shouldn't've", "shouldn'tve": "shouldn't've",
    "somebody'd": "somebodyd", "somebodyd've": "somebody'd've", "somebody'dve": "somebody'd've",
    "somebodyll": "somebody'll", "somebodys": "somebody's", "someoned": "someone'd",
    "someoned've": "someone'd've", "someone'dve": "someone'd've", "someonell": "someone'll",
    "someones": "someone's", "somethingd": "something'd", "somethingd've": "something'd've",
    "something'dve": "something'd've", "somethingll": "something'll", "thats": "that's",
    "thered": "there'd", "thered've": "there'd've", "there'dve": "there'd've", "therere": "there're",
    "theres": "there's", "theyd": "they'd", "theyd've": "they'd've", "they'dve": "they'd've",
    "theyll": "they'll", "theyre": "they're", "theyve": "they've", "twas": "'twas", "wasnt": "wasn't",
    "wed've": "we'd've", "we'dve": "we'd've", "weve": "we've", "werent": "weren't", "whatll": "what'll",
    "whatre": "what're", "whats": "what's", "whatve": "what've", "whens": "when's", "whered": "where'd",
    "wheres": "where's", "whereve": "where've", "whod": "who'd", "whod've": "who'd've", "who'dve": "who'd've",
    "wholl": "who'll", "whos": "who's", "whove": "who've", "whyll": "why'll", "whyre": "why're",
    "whys": "why's", "wont": "won't", "wouldve": "would've", "wouldnt": "wouldn't",
    "wouldnt've": "wouldn't've", "wouldn'tve": "wouldn't've", "yall": "y'all", "yall'll": "y'all'll",
    "y'allll": "y'all'll", "yall'd've": "y'all'd've", "y'alld've": "y'all'd've", "y'all'dve": "y'all'd've",
    "youd": "you'd", "youd've": "you'd've", "you'dve": "you'd've", "youll": "you'll", "youre": "you're",
    "youve": "you've",
}
NUMBER_WORDS: dict[str, str] = {
    "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
    "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10",
}
ARTICLES = frozenset({"a", "an", "the"})
PUNCTUATION = (";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!")

_PERIOD = re.compile(r"\.(?!\d)")  # a period not followed by a digit ("2.5" keeps its period)
_DIGIT_COMMA = re.compile(r"(\d)(,)(\d)")  # "1,000"


def _process_punctuation(text: str) -> str:
    out = text
    for p in PUNCTUATION:
        # Punctuation next to a space (or any text with a digit comma) is deleted; otherwise it
        # separates words ("black/white" -> "black white").
        if (p + " " in text or " " + p in text) or _DIGIT_COMMA.search(text) is not None:
            out = out.replace(p, "")
        else:
            out = out.replace(p, " ")
    return _PERIOD.sub("", out)


def _process_digits_articles(text: str) -> str:
    words = [NUMBER_WORDS.get(w, w) for w in text.lower().split()]
    words = [CONTRACTIONS.get(w, w) for w in words if w not in ARTICLES]
    return " ".join(words)


def normalize_vqa(text: str) -> str:
    """Official VQA answer normalisation: normalize_vqa("Two dogs.") == "2 dogs"."""
    text = str(text).replace("\n", " ").replace("\t", " ").strip().lower()
    return _process_digits_articles(_process_punctuation(text))


def normalize_gqa(text: str) -> str:
    """LLaVA's GQA rule: strip, drop trailing periods, lower-case."""
    return str(text).strip().rstrip(".").strip().lower()


_NON_WORD = re.compile(r"[^\w\s]")


def normalize_text(text: str) -> str:
    """Caption-metric normalisation: lower-case, punctuation removed, single spaces."""
    return " ".join(_NON_WORD.sub(" ", str(text).lower()).split())
