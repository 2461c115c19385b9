"""What the offline filter found for one object of a prompt, and how sure it is."""
from __future__ import annotations

from dataclasses import dataclass, field

# A scene is only built when every part stands on its own: a part found by meaning needs this similarity. Below it,
# "a casino machine with three reels and a lever" would be drawn as slot machines and a wrench; it is one object.
SCENE_SIMILARITY = 0.6
# ... and a part found as a name inside it must cover at least this share of its words ("a red balloon": balloon).
SCENE_COVERAGE = 0.5


@dataclass
class Match:
    concept: str
    how: str                      # which rule found it, for the explanation
    dropped: list[str] = field(default_factory=list)
    # "name": the whole phrase is a name, alias, synonym or Russian name (or its plural, inflection, or the same
    # after correcting a word); "typo": the whole phrase is a typo of one; "inside": a name inside a longer phrase;
    # "meaning": the nearest concept by sentence embedding
    kind: str = "name"
    score: float = 1.0            # "inside": share of the phrase's words the name covers; "meaning": similarity
    note: str | None = None       # a warning for the person (a guess on words the filter cannot read)
    typed: str | None = None      # "inside": the words of the phrase that named it ("coffee" for "hot beverage")

    @property
    def confident(self) -> bool:
        """Sure enough to be one object of a scene."""
        if self.kind == "meaning":
            return self.score >= SCENE_SIMILARITY and self.note is None
        return self.kind in ("name", "typo") or self.score >= SCENE_COVERAGE


@dataclass
class ObjectSpec:
    words: str                    # the words the person typed for this object
    match: Match | None
    count: int = 1
    size: str | None = None
