"""Answer normalisation as the official scorers do it, so that "Two", "2" and "two." all count as the same answer.

Two reference processors, transcribed rule for rule:

* vqaEval.py (GT-Vision-Lab, the VQAv2 / VizWiz servers): `process_punctuation` then
  `process_digit_article` — punctuation removed (or turned into a space), a period removed unless a
  digit follows it, number words zero..ten mapped to digits, articles a / an / the dropped,
  apostrophe-less contractions ("dont") restored ("don't"). `normalize_vqa` is the two in a row.
* m4c's `EvalAIAnswerProcessor` (LLaVA's m4c_evaluator.py, used for TextVQA and to clean VQAv2 /
  VizWiz predictions before submission): `m4c_answer` = its `word_tokenize` (lower-case, "," and "?"
  deleted, "'s" split off as " 's") followed by the same two steps.

`normalize_gqa` is LLaVA's convert_gqa_for_eval rule (drop trailing periods, lower-case).
`normalize_text` is the light normalisation of deco's lenient parsers (lower-case, punctuation off,
whitespace collapsed).
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

_PERIOD = re.compile(r"(?!<=\d)(\.)(?!\d)")  # as written in both references: a period not before a digit
_DIGIT_COMMA = re.compile(r"(\d)(\,)(\d)")  # "1,000"
# Both references call `PERIOD.sub("", text, re.UNICODE)`: the flag lands in sub's `count` argument, so at
# most 32 periods are removed. Kept for parity (it only matters for answers with more than 32 periods).
_PERIOD_COUNT = int(re.UNICODE)


def process_punctuation(text: str) -> str:
    """vqaEval.processPunctuation / EvalAIAnswerProcessor.process_punctuation."""
    out = text
    for p in PUNCTUATION:
        # Punctuation next to a space (or any text with a digit comma) is deleted; otherwise it
        # separates words ("black/white" -> "black white").
        if (p + " " in text or " " + p in text) or _DIGIT_COMMA.search(text) is not None:
            out = out.replace(p, "")
        else:
            out = out.replace(p, " ")
    return _PERIOD.sub("", out, count=_PERIOD_COUNT)


def process_digit_article(text: str) -> str:
    """vqaEval.processDigitArticle: lower-case words, number words -> digits, articles out, contractions."""
    words = [NUMBER_WORDS.get(w, w) for w in text.lower().split()]
    words = [CONTRACTIONS.get(w, w) for w in words if w not in ARTICLES]
    return " ".join(words)


def _clean_whitespace(text: str) -> str:
    return str(text).replace("\n", " ").replace("\t", " ").strip()


def normalize_vqa(text: str) -> str:
    """vqaEval's full processing: normalize_vqa("Two dogs.") == "2 dogs"."""
    return process_digit_article(process_punctuation(_clean_whitespace(text)))


def m4c_answer(text: str) -> str:
    """m4c EvalAIAnswerProcessor: m4c_answer("What's this?") == "what 's this"."""
    word = str(text).lower().replace(",", "").replace("?", "").replace("'s", " 's").strip()
    return process_digit_article(process_punctuation(_clean_whitespace(word)))


def normalize_gqa(text: str) -> str:
    """LLaVA's convert_gqa_for_eval.py: `text.rstrip('.').lower()` (answers arrive stripped)."""
    return str(text).rstrip(".").lower()


_NON_WORD = re.compile(r"[^\w\s]")


def normalize_text(text: str) -> str:
    """Caption-metric normalisation: lower-case, punctuation removed, single spaces."""
    return " ".join(_NON_WORD.sub(" ", str(text).lower()).split())
