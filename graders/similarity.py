"""`text_similarity`: OpenAI's fields and metric names, computed offline with the usual libraries.

fuzzy_match: rapidfuzz's normalized Indel ratio (after lower-casing and stripping punctuation);
bleu: sacrebleu's sentence BLEU / 100; gleu: NLTK's sentence GLEU on whitespace tokens;
meteor: NLTK's METEOR (with WordNet synonyms when NLTK's WordNet data is installed, otherwise exact and
stem matches only, which the log says); rouge_1..rouge_5, rouge_l: rouge-score F-measure.
cosine needs an embedding model and is refused with a clear message. Libraries load on first use.
"""

from __future__ import annotations

import functools

from graders.base import Grader, GradeResult
from graders.spec import SpecReader

METRICS = ("fuzzy_match", "bleu", "gleu", "meteor", "rouge_1", "rouge_2", "rouge_3", "rouge_4", "rouge_5",
           "rouge_l")
UNSUPPORTED = {"cosine": "needs an embedding model (OpenAI computes it with its embeddings API), which does "
                         "not run offline here. Use fuzzy_match, bleu or rouge_l, or a score_model judge for "
                         "meaning-level similarity."}


def fuzzy_match(a: str, b: str) -> float:
    from rapidfuzz import fuzz, utils

    return fuzz.ratio(a, b, processor=utils.default_process) / 100.0


def bleu(a: str, b: str) -> float:
    import sacrebleu

    return sacrebleu.sentence_bleu(a, [b]).score / 100.0


def gleu(a: str, b: str) -> float:
    from nltk.translate.gleu_score import sentence_gleu

    hyp, ref = a.split(), b.split()
    if not hyp or not ref:
        return float(hyp == ref)
    return float(sentence_gleu([ref], hyp))


class _NoWordNet:
    """Stands in for WordNet when its data isn't installed: METEOR's synonym stage then finds nothing."""

    @staticmethod
    def synsets(*args, **kwargs):
        return []


@functools.lru_cache(maxsize=1)
def _wordnet():
    try:
        from nltk.corpus import wordnet

        wordnet.ensure_loaded()
        return wordnet, True
    except LookupError:
        return _NoWordNet(), False


def meteor(a: str, b: str) -> float:
    from nltk.translate.meteor_score import meteor_score

    wordnet, _ = _wordnet()
    hyp, ref = a.split(), b.split()
    if not hyp or not ref:
        return float(hyp == ref)
    return float(meteor_score([ref], hyp, wordnet=wordnet))


@functools.lru_cache(maxsize=8)
def _rouge_scorer(kind: str):
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer([kind], use_stemmer=False)


def rouge(kind: str, a: str, b: str) -> float:
    return float(_rouge_scorer(kind).score(b, a)[kind].fmeasure)


def similarity(metric: str, a: str, b: str) -> float:
    if metric.startswith("rouge_"):
        return rouge("rouge" + metric[len("rouge_"):].upper(), a, b)
    return {"fuzzy_match": fuzzy_match, "bleu": bleu, "gleu": gleu, "meteor": meteor}[metric](a, b)


class TextSimilarity(Grader):
    type = "text_similarity"
    FIELDS = {"input", "reference", "evaluation_metric", "pass_threshold"}

    def __init__(self, name, input, reference, evaluation_metric, pass_threshold=None, weight=1.0):
        super().__init__(name, weight)
        self.input, self.reference, self.metric = input, reference, evaluation_metric
        self.pass_threshold = pass_threshold

    @classmethod
    def from_spec(cls, r: SpecReader, base_dir: str):
        metric = r.get("evaluation_metric")
        if metric in UNSUPPORTED:
            raise r.error("evaluation_metric", f"'{metric}' is not supported here: {UNSUPPORTED[metric]}")
        metric = r.choice("evaluation_metric", METRICS)
        return cls(r.name, r.template("input"), r.template("reference"), metric,
                   r.number("pass_threshold", None), r.number("weight", 1.0))

    def _grade_one(self, sample, item):
        a, b = self.input.render(sample, item), self.reference.render(sample, item)
        score = min(1.0, max(0.0, similarity(self.metric, a, b)))
        log = f"{self.metric} = {score:.3f}"
        if self.pass_threshold is not None:
            log += f" ({'pass' if score >= self.pass_threshold else 'fail'} at {self.pass_threshold:g})"
        if self.metric == "meteor" and not _wordnet()[1]:
            log += " (WordNet data not installed: synonyms not matched)"
        return GradeResult(score, log=log)
