"""Column schemas of the paper's real-data attribute benchmarks (docs/method.md §9): CelebA 40 and LFW 73 attributes.

A schema says which dataset columns hold the image and each attribute, how to read the labels, how to crop and
resize the image, and which splits to use. Every field is configurable, so any 🤗 dataset with these attributes
(whatever its column names) can be evaluated: `CELEBA_SCHEMA.with_columns({"Male": "male"})`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

LABEL_KINDS = ("binary", "continuous")

CELEBA_ATTRIBUTES: tuple[str, ...] = (
    "5_o_Clock_Shadow", "Arched_Eyebrows", "Attractive", "Bags_Under_Eyes", "Bald", "Bangs", "Big_Lips", "Big_Nose",
    "Black_Hair", "Blond_Hair", "Blurry", "Brown_Hair", "Bushy_Eyebrows", "Chubby", "Double_Chin", "Eyeglasses",
    "Goatee", "Gray_Hair", "Heavy_Makeup", "High_Cheekbones", "Male", "Mouth_Slightly_Open", "Mustache",
    "Narrow_Eyes", "No_Beard", "Oval_Face", "Pale_Skin", "Pointy_Nose", "Receding_Hairline", "Rosy_Cheeks",
    "Sideburns", "Smiling", "Straight_Hair", "Wavy_Hair", "Wearing_Earrings", "Wearing_Hat", "Wearing_Lipstick",
    "Wearing_Necklace", "Wearing_Necktie", "Young",
)  # fmt: skip

# The 73 attribute scores of LFW (Kumar et al., "Attribute and simile classifiers"), in the order of the
# published attribute file.
LFW_ATTRIBUTES: tuple[str, ...] = (
    "Male", "Asian", "White", "Black", "Baby", "Child", "Youth", "Middle Aged", "Senior", "Black Hair", "Blond Hair",
    "Brown Hair", "Bald", "No Eyewear", "Eyeglasses", "Sunglasses", "Mustache", "Smiling", "Frowning", "Chubby",
    "Blurry", "Harsh Lighting", "Flash", "Soft Lighting", "Outdoor", "Curly Hair", "Wavy Hair", "Straight Hair",
    "Receding Hairline", "Bangs", "Sideburns", "Fully Visible Forehead", "Partially Visible Forehead",
    "Obstructed Forehead", "Bushy Eyebrows", "Arched Eyebrows", "Narrow Eyes", "Eyes Open", "Big Nose",
    "Pointy Nose", "Big Lips", "Mouth Closed", "Mouth Slightly Open", "Mouth Wide Open", "Teeth Not Visible",
    "No Beard", "Goatee", "Round Jaw", "Double Chin", "Wearing Hat", "Oval Face", "Square Face", "Round Face",
    "Color Photo", "Posed Photo", "Attractive Man", "Attractive Woman", "Indian", "Gray Hair", "Bags Under Eyes",
    "Heavy Makeup", "Rosy Cheeks", "Shiny Skin", "Pale Skin", "5 o' Clock Shadow", "Strong Nose-Mouth Lines",
    "Wearing Lipstick", "Flushed Face", "High Cheekbones", "Brown Eyes", "Wearing Earrings", "Wearing Necktie",
    "Wearing Necklace",
)  # fmt: skip


@dataclass(frozen=True)
class AttributeSchema:
    r"""
    How to read an attribute benchmark from a 🤗 dataset.

    Args:
        name (`str`): Benchmark name (for reports).
        attributes (`tuple[str]`): Attribute names, in report order.
        label_kind (`str`): `"binary"` (values > 0 are positive: handles bool, {0, 1} and {-1, 1}) or
            `"continuous"` (float scores).
        image_column (`str`, defaults to `"image"`): Column holding PIL images.
        columns (`dict[str, str]`): Attribute → dataset column, for datasets with one column per attribute; an
            attribute absent from it is read from the column of its own name.
        attributes_column (`str`, *optional*): A single sequence column holding every attribute in `attributes`
            order (takes precedence over `columns`).
        crop (`tuple[int, int, int, int]`, *optional*): `(top, left, height, width)` crop box applied before resizing.
        resolution (`int`, defaults to 64): Side of the resized square image.
        splits (`dict[str, str]`): Role (`"train"`, `"val"`, `"test"`) → dataset split name; a role missing from the
            dataset is carved out of the train split (`split_fractions`).
        split_fractions (`tuple[float, float, float]`): Fractions used when splits must be carved out.
    """

    name: str
    attributes: tuple[str, ...]
    label_kind: str
    image_column: str = "image"
    columns: Mapping[str, str] = field(default_factory=dict)
    attributes_column: str | None = None
    crop: tuple[int, int, int, int] | None = None
    resolution: int = 64
    splits: Mapping[str, str] = field(default_factory=lambda: {"train": "train", "val": "validation", "test": "test"})
    split_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)

    def __post_init__(self) -> None:
        if self.label_kind not in LABEL_KINDS:
            raise ValueError(f"`label_kind` must be one of {LABEL_KINDS}, got {self.label_kind!r}.")
        if not self.attributes or len(set(self.attributes)) != len(self.attributes):
            raise ValueError(f"`attributes` must be non-empty and distinct, got {len(self.attributes)} names.")
        unknown = sorted(set(self.columns) - set(self.attributes))
        if unknown:
            raise ValueError(f"`columns` maps unknown attributes {unknown}.")
        if self.crop is not None and (len(self.crop) != 4 or min(self.crop[2:]) < 1 or min(self.crop[:2]) < 0):
            raise ValueError(f"`crop` must be (top, left, height, width) with positive size, got {self.crop}.")
        if self.resolution < 1:
            raise ValueError(f"`resolution` must be >= 1, got {self.resolution}.")
        if set(self.splits) - {"train", "val", "test"} or "train" not in self.splits:
            raise ValueError(f"`splits` must map 'train' (and optionally 'val', 'test'), got {dict(self.splits)}.")

    def column(self, attribute: str) -> str:
        """The dataset column holding `attribute` (when there is no `attributes_column`)."""
        return self.columns.get(attribute, attribute)

    def with_columns(self, columns: Mapping[str, str], **changes: Any) -> AttributeSchema:
        """A copy with more attribute → column mappings (and any other field changed)."""
        return replace(self, columns={**self.columns, **columns}, **changes)

    def read_labels(self, row: Mapping[str, Any]) -> list[float]:
        """The attribute values of one dataset row, as floats (binary: 1.0 / 0.0)."""
        if self.attributes_column is not None:
            values = list(row[self.attributes_column])
            if len(values) != len(self.attributes):
                raise ValueError(
                    f"column {self.attributes_column!r} holds {len(values)} values, expected {len(self.attributes)}."
                )
        else:
            values = [row[self.column(a)] for a in self.attributes]
        if self.label_kind == "binary":
            return [1.0 if float(v) > 0 else 0.0 for v in values]
        return [float(v) for v in values]

    def check_columns(self, column_names: Sequence[str]) -> None:
        """Raises `ValueError` naming the columns this schema needs that `column_names` lacks."""
        needed = [self.image_column]
        needed += [self.attributes_column] if self.attributes_column else [self.column(a) for a in self.attributes]
        missing = [c for c in needed if c not in column_names]
        if missing:
            raise ValueError(
                f"{self.name}: the dataset lacks the columns {missing[:8]}{' …' if len(missing) > 8 else ''} "
                f"(has {list(column_names)[:8]}…); map them with `schema.with_columns({{attribute: column}})`."
            )


# CelebA at 64×64 as in the paper: crop (top=57, left=25, 128×128) of the aligned 178×218 image, resize to 64.
CELEBA_SCHEMA = AttributeSchema(
    name="celeba",
    attributes=CELEBA_ATTRIBUTES,
    label_kind="binary",
    crop=(57, 25, 128, 128),
    resolution=64,
)

# LFW with 73 continuous attribute scores; LFW has no standard split, so val/test are carved out of train.
LFW_SCHEMA = AttributeSchema(
    name="lfw",
    attributes=LFW_ATTRIBUTES,
    label_kind="continuous",
    resolution=64,
    splits={"train": "train"},
)
