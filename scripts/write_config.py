"""Print config.toml from the dataclasses: defaults and the one-line comments on each field, with a
table [answer.<mode>] for every mode registered in the entry-point group footnotes.modes."""
import dataclasses, sys, tomllib
sys.path.insert(0, ".")
from assistant.engine import mode_class, mode_names
from knowledge.config import config_key, field_comments
from ui.settings import FootnotesConfig

def fmt(v):
    if isinstance(v, bool): return "true" if v else "false"
    if isinstance(v, str): return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, tuple): return "[" + ", ".join(fmt(x) for x in v) + "]"
    if isinstance(v, float): return repr(v)
    if isinstance(v, int): return f"{v:_}" if abs(v) >= 10000 else str(v)
    return str(v)

out = ["# Footnotes settings. Every key is listed with its default; unknown keys are rejected.",
       "# Use with `footnotes --config config.toml ...` or FOOTNOTES_CONFIG=config.toml.", ""]
def section(name, obj):
    cs = field_comments(type(obj))
    out.append(f"[{name}]")
    for f in dataclasses.fields(obj):
        v = getattr(obj, f.name)
        if dataclasses.is_dataclass(v) or f.metadata.get("tables"): continue
        out.append(f"{config_key(f.name)} = {fmt(v)}" + (f"  # {cs[f.name]}" if f.name in cs else ""))
    out.append("")
    if name == "answer":  # each mode's own settings, as the mode declares them
        for mode in mode_names():
            own = mode_class(mode).Settings()
            if dataclasses.fields(own):
                section(f"answer.{mode}", own)
cfg = FootnotesConfig()
for top in dataclasses.fields(cfg):
    v = getattr(cfg, top.name)
    if not dataclasses.is_dataclass(v): continue
    subs = [f for f in dataclasses.fields(v) if dataclasses.is_dataclass(getattr(v, f.name))]
    if subs:
        for f in subs:
            section(f.name, getattr(v, f.name))
            if f.name == "sources":  # one table per registered source kind: [sources.<kind>], from its Settings
                from knowledge.registry import SOURCES_GROUP, load_plugin, registered_names
                for kind in registered_names(SOURCES_GROUP):
                    settings = load_plugin(SOURCES_GROUP, kind).Settings()
                    if dataclasses.fields(settings): section(f"sources.{kind}", settings)
    else:
        section(top.name, v)
text = "\n".join(out)
tomllib.loads(text)
print(text, end="")
