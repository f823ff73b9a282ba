"""What the verbs return: a dict of plain values (JSON-ready; keys starting with '_' hold the arrays the
reports are drawn from) that also prints itself as a table. infer's `Stats` and inspect's
`InspectReport` are the same idea with fields of their own."""
from __future__ import annotations

from . import format as fmt


class Result(dict):
    def to_dict(self) -> dict:
        return {k: v for k, v in self.items() if not k.startswith("_")}

    def rows(self) -> list[tuple[str, str]]:
        return [(k, str(v)) for k, v in self.to_dict().items()]

    def table(self) -> str:
        rows = self.rows()
        w = max(len(k) for k, _ in rows) + 2  # the longest label
        return "\n".join(f"{k:<{w}}{v}" for k, v in rows)


class EvalResult(Result):
    def rows(self):
        rows = [("model", f"{self['model']} (step {self['step']})"), ("videos", str(self["videos"]))]
        classes = len(self.get("_class_ids", ()))
        if "segment_map" not in self and 0 < classes < fmt.NUM_CLASSES:
            rows.append(("classes", f"{classes} (the export's: the video metrics cover these classes only)"))
        if "segment_map" in self:
            rows.append(("rated segments", f"{self['rated_segments']} (Hit@1, GAP, mAP over these)"))
        rows += [(k, f"{self[k]:.4f}") for k in ("hit_at_one", "perr", "gap", "map", "loss") if k in self]
        if "segment_map" in self:
            rows.append((f"MAP@{self['top_n']}", f"{self['segment_map']:.4f} (Kaggle 2019, "
                                                  f"{self['segment_map_classes']} classes)"))
        return rows


class ScoreResult(Result):
    def rows(self):
        cut = f"the first {self['top_n']}" if self["top_n"] else "all submitted"
        return [(f"MAP@{self['top_n']}" if self["top_n"] else "MAP (no cut)", f"{self['map']:.6f}"),
                ("classes", f"{self['classes']} with positive ratings ({self['submitted_classes']} submitted)"),
                ("entries", f"{self['entries']} ({self['rated_entries']} rated, within {cut})"),
                ("ratings", f"{self['ratings']}"),
                ("label cache", f"{self['label_cache']}: {self['label_cache_file']}"),
                ("seconds", ", ".join(f"{k} {v:.2f}" for k, v in self["seconds"].items()))]


class MergeResult(Result):
    def rows(self):
        return [("wrote", self["output"]), ("partials", str(self["partials"])),
                ("bytes", f"{self['bytes'] / 1e6:.1f} MB")]


class ExportResult(Result):
    def rows(self):
        return [("wrote", self["output"]), ("model", f"{self['model']} (step {self['step']})"),
                ("classes", self["classes"] + (", fp16" if self["fp16"] else "")),
                ("bytes", f"{self['bytes'] / 1e6:.1f} MB")]
