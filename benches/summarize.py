"""Writes benches/results/<machine>/summary.md from one run of benches/cpu_compare.sh.

Inputs (all from the same run, in --work): the two corpus manifests; for each corpus
(imagenet, large), output (uint8, float16), core count (1, all) and repeat r: peers.py's
`<corpus>-<mode>-peers-<cores>-<r>.json` and `augserve run`'s
`<corpus>-<mode>-augserve-<cores>-<r>.json`; `augserve bench`'s bench/ folder; service.json.
Ratios first (augserve against the fastest peer of each row, medians of the repeats), then every
figure with the machine, the corpora and the command that produced it, and peers.png.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import shutil
import statistics
import subprocess
import time

CORPORA = {"imagenet": "ImageNet-size", "large": "large photos"}
MODES = {"uint8": "uint8 HWC crops", "float16": "float16 NCHW, normalised + mixup"}
PEERS = {
    "opencv": "OpenCV",
    "simplejpeg": "simplejpeg + OpenCV",
    "pillow": "Pillow",
    "torchvision": "torchvision v2",
    "dali": "DALI CPU pipeline",
}
# augserve's own rows: its default (exact) and with the spec's dct_scaling (large crops decoded
# at 1/2-1/8 scale; pixels within a few levels of the exact output, ARCHITECTURE.md).
OURS = {"augserve": "augserve", "augserve_dct": "augserve, dct_scaling"}
# The long runs' own rates, start-up and the pipeline's fill and drain included: shown beside
# the steady rates, never a peer.
WHOLE_RUN = {f"{k}_whole_run": f"{v}, whole {{e}}-epoch run" for k, v in OURS.items()}
# The targets: augserve / fastest peer, per (corpus, mode, one core?).
TARGETS = {("imagenet", "uint8", True): 1.4, ("large", "uint8", True): 2.0}
FLOAT_TARGET_ALL_CORES = 1.5


def cpu_model() -> str:
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def steady_rate(work: pathlib.Path, stem: str, long_epochs: int) -> tuple[float, float] | None:
    """augserve's steady rate from a 1-epoch and a `long_epochs` run of the same configuration,
    (images(long) - images(1)) / (secs(long) - secs(1)), and the long run's own rate. Older
    work folders (one run, `<stem>.json`) give that run's rate for both."""
    short, long = work / f"{stem}-e1.json", work / f"{stem}-e{long_epochs}.json"
    if short.exists() and long.exists():
        a, b = json.loads(short.read_text()), json.loads(long.read_text())
        return (b["images"] - a["images"]) / (b["seconds"] - a["seconds"]), b["images_per_s"]
    single = work / f"{stem}.json"
    if single.exists():
        ips = json.loads(single.read_text())["images_per_s"]
        return ips, ips
    return None


def load_rates(work: pathlib.Path, cores: int, repeats: int, long_epochs: int) -> tuple[dict, dict]:
    """{(corpus, mode, cores): {name: [images/s per repeat]}} and the peers' versions."""
    rates: dict = {}
    versions: dict = {}
    for corpus in CORPORA:
        for mode in MODES:
            for c in sorted({1, cores}):
                row = rates.setdefault((corpus, mode, c), {})
                for r in range(1, repeats + 1):
                    peers = json.loads((work / f"{corpus}-{mode}-peers-{c}-{r}.json").read_text())
                    versions = peers.get("versions", versions)
                    for key, ips in peers["images_per_s"].items():
                        row.setdefault(key.split("/")[0], []).append(ips)
                    for ours in OURS:
                        found = steady_rate(work, f"{corpus}-{mode}-{ours}-{c}-{r}", long_epochs)
                        if found:
                            row.setdefault(ours, []).append(found[0])
                            row.setdefault(f"{ours}_whole_run", []).append(found[1])
    return rates, versions


def corpus_text(m: dict, name: str) -> str:
    kind = f" --kind {m['kind']}" if m.get("kind", "imagenet") != "imagenet" else ""
    return (
        f"**{CORPORA[name]}**: {m['images']} JPEGs cut from {m['source']} by `benches/make_corpus.py{kind} "
        f"--images {m['images']}` (seed {m['seed']}, sha256 {m['sha256'][:12]}): mean {m['mean_size'][0]}x{m['mean_size'][1]}, "
        f"long side {m['long_side_range'][0]}-{m['long_side_range'][1]}, q{m['quality_range'][0]}-{m['quality_range'][1]}, "
        f"{m['subsampling_420_fraction'] * 100:.0f} % 4:2:0, {m['progressive_fraction'] * 100:.0f} % progressive"
    )


def ratio_rows(rates: dict, cores: int) -> list[str]:
    """augserve against the fastest peer of the same repeat (they ran minutes apart), then the
    median and range of those paired ratios: on a shared VM a peer's rate can move by a third
    between repeats, and pairing keeps such drift out of the ratio."""
    med = statistics.median
    lines = [
        "| corpus | output | cores | fastest peer (median) | its images/s | augserve images/s | augserve / fastest, paired per repeat: median (range) | with dct_scaling: images/s | ratio | target | met (exact / dct_scaling) |",
        "| --- | --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    for (corpus, mode, c), row in rates.items():
        peers = [k for k in row if k not in OURS and k not in WHOLE_RUN]
        peer = max(peers, key=lambda k: med(row[k]))
        target = TARGETS.get((corpus, mode, c == 1))
        if mode == "float16" and c == cores:
            target = FLOAT_TARGET_ALL_CORES
        cells, mets = [], []
        for ours in OURS:
            if ours not in row:
                cells.append("n/a | n/a")
                mets.append("-")
                continue
            paired = [a / max(row[k][r] for k in peers) for r, a in enumerate(row[ours])]
            ratio = med(paired)
            cells.append(f"{med(row[ours]):.0f} | **{ratio:.2f}x** ({min(paired):.2f}-{max(paired):.2f})")
            mets.append("-" if target is None else ("yes" if ratio >= target else "**no**"))
        lines.append(
            f"| {CORPORA[corpus]} | {mode} | {c} | {PEERS[peer]} | {med(row[peer]):.0f} | {' | '.join(cells)} "
            f"| {f'>= {target}x' if target else '-'} | {' / '.join(mets)} |"
        )
    return lines


def figure_rows(rates: dict, cores: int, long_epochs: int) -> list[str]:
    med = statistics.median
    lines = []
    for corpus in CORPORA:
        for mode in MODES:
            lines += [
                f"**{CORPORA[corpus]}, {MODES[mode]}** (images/s, median and range of the repeats):",
                "",
                f"| pipeline | 1 core | {cores} cores |",
                "| --- | ---: | ---: |",
            ]
            for name in [*OURS, *WHOLE_RUN, *PEERS]:
                cells = []
                for c in sorted({1, cores}):
                    v = rates[(corpus, mode, c)].get(name)
                    cells.append(f"{med(v):.0f} ({min(v):.0f}-{max(v):.0f})" if v else "n/a")
                if name in OURS:
                    label = f"**{OURS[name]}**"
                else:
                    label = WHOLE_RUN[name].format(e=long_epochs) if name in WHOLE_RUN else PEERS[name]
                lines.append(f"| {label} | {' | '.join(cells)} |")
            lines.append("")
    return lines


def chart(rates: dict, out: pathlib.Path) -> None:
    """Grouped bars: augserve beside every peer, per corpus, output and core count."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n in OURS if any(n in row for row in rates.values())] + list(PEERS)
    fig, axes = plt.subplots(1, len(CORPORA) * len(MODES), figsize=(16, 4.5))
    for ax, (corpus, mode) in zip(axes, [(c, m) for c in CORPORA for m in MODES]):
        groups = sorted(c for (cc, mm, c) in rates if (cc, mm) == (corpus, mode))
        width = 0.8 / len(names)
        for i, name in enumerate(names):
            ys = [statistics.median(rates[(corpus, mode, c)].get(name) or [0]) for c in groups]
            xs = [g + (i - len(names) / 2 + 0.5) * width for g in range(len(groups))]
            colour = {"augserve": "black", "augserve_dct": "dimgray"}.get(name)
            ax.bar(xs, ys, width, label=OURS.get(name) or PEERS[name], color=colour)
        ax.set_xticks(range(len(groups)), [f"{c} core{'s' if c > 1 else ''}" for c in groups])
        ax.set_title(f"{CORPORA[corpus]}, {mode}")
        ax.set_ylabel("images/s")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=len(names), fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 0.92))
    fig.savefig(out, dpi=90)


def decode_alone_row(rates: dict, work: pathlib.Path) -> str:
    """The one-core pipeline (uint8, ImageNet-size, median of the repeats) against the same
    decoder, libjpeg-turbo, decoding the same images whole on one core (benches/decoder_candidates'
    turbo_whole, run right after each repeat of the pipeline's: median of those runs; one run,
    minutes apart, in results before 2026-12-04 08:00)."""
    label = "pipeline / decode alone (libjpeg-turbo, whole images), one core, ImageNet-size"
    found = sorted(work.glob("imagenet-decoders-*.json")) or [work / "imagenet-decoders.json"]
    found = [f for f in found if f.exists()]
    if not found:
        return f"| {label} | n/a | >= 100 % | no |"
    wholes = [json.loads(f.read_text())["images_per_s"]["turbo_whole"] for f in found]
    whole = statistics.median(wholes)
    label += f" (decode alone: median of {len(wholes)}, {min(wholes):.0f}-{max(wholes):.0f})"
    pipeline = statistics.median(rates[("imagenet", "uint8", 1)]["augserve"])
    share = pipeline / whole
    return (
        f"| {label}: {pipeline:.0f} / {whole:.0f} images/s | **{share * 100:.0f} %** | >= 100 % "
        f"| {'yes' if share >= 1 else '**no**'} |"
    )


def decoder_rows(work: pathlib.Path) -> list[str]:
    """benches/decoder_candidates' one-core rates, when cpu_compare.sh could build it."""
    found = {c: work / f"{c}-decoders.json" for c in CORPORA}
    if not all(f.exists() for f in found.values()):
        return ["Decoder candidates: not measured in this run.", ""]
    runs = {c: json.loads(f.read_text()) for c, f in found.items()}
    names = list(runs["imagenet"]["images_per_s"])
    lines = [
        "Decoder candidates, one core (`benches/decoder_candidates`: each image decoded to RGB after a RandomResizedCrop "
        "box is drawn; crop = only the crop region, scaled = DCT-domain 1/2-1/8 where the crop stays >= 224 px):",
        "",
        f"| decoder | {' | '.join(f'{CORPORA[c]} images/s' for c in CORPORA)} | {' | '.join(f'{CORPORA[c]} / zune whole' for c in CORPORA)} |",
        "| --- |" + " ---: |" * (2 * len(CORPORA)),
    ]
    for n in names:
        ips = [runs[c]["images_per_s"][n] for c in CORPORA]
        rel = [runs[c]["images_per_s"][n] / runs[c]["images_per_s"]["zune_whole"] for c in CORPORA]
        lines.append(f"| {n} | {' | '.join(f'{v:.0f}' for v in ips)} | {' | '.join(f'{v:.2f}x' for v in rel)} |")
    checks = "; ".join(
        f"{CORPORA[c]}: {r['scaled_images']} of {r['images']} images scalable, region decode differs from the whole "
        f"decode's region in {r['region_mismatch'][0]} images (scaled: {r['scaled_region_mismatch'][0]})"
        for c, r in runs.items()
    )
    lock = pathlib.Path(__file__).resolve().parent / "decoder_candidates" / "Cargo.lock"
    text = lock.read_text() if lock.exists() else ""
    versions = []
    for crate in ("zune-jpeg", "turbojpeg-sys", "jpeg-decoder"):
        marker = f'name = "{crate}"\nversion = "'
        if marker in text:
            versions.append(f"{crate} {text.split(marker, 1)[1].split(chr(34), 1)[0]}")
    note = f"Versions: {', '.join(versions)} (turbojpeg-sys builds the libjpeg-turbo it bundles). " if versions else ""
    return lines + ["", note + checks + ".", ""]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", type=pathlib.Path, required=True, help="folder with the run's JSON files")
    p.add_argument("--cores", type=int, default=os.cpu_count())
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--long-epochs", type=int, default=4, help="epochs of augserve's long run")
    p.add_argument("--out", type=pathlib.Path, required=True, help="results folder for this machine")
    a = p.parse_args()
    rates, versions = load_rates(a.work, a.cores, a.repeats, a.long_epochs)
    manifests = {c: json.loads((a.work / f"{c}-manifest.json").read_text()) for c in CORPORA}
    service = json.loads((a.work / "service.json").read_text())["median"]
    build = (a.work / "build.txt").read_text().split("\n", 1) if (a.work / "build.txt").exists() else None
    if build:  # recorded by cpu_compare.sh when it built the binary
        commit, dirty = build[0].strip(), build[1].strip() if len(build) > 1 else ""
    else:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True).stdout.strip()
    in_proc = service["in_process"]["images_per_s"]
    a.out.mkdir(parents=True, exist_ok=True)
    chart(rates, a.out / "peers.png")
    lines = [
        f"# augserve against the CPU pipelines people run, on {platform.node()}",
        "",
        f"Machine: {cpu_model()}, {a.cores} cores, no GPU used. Date: {time.strftime('%Y-%m-%d')}. "
        f"Commit: {commit}{' (with uncommitted changes)' if dirty else ''}. One run of `benches/cpu_compare.sh`, "
        f"{a.repeats} interleaved repeats of every measurement; figures are medians.",
        "",
        *[f"- {corpus_text(manifests[c], c)}." for c in CORPORA],
        "",
        "Pipeline everywhere: decode, RandomResizedCrop 224 (scale 0.08-1, antialiased), flip 0.5, brightness 0.4 on uint8; "
        "then either the uint8 HWC batch (what timm's prefetcher and DALI users hand to the GPU) or float16 NCHW normalised "
        "with ImageNet mean/std + batch mixup 0.2 (peers: torch's vectorised ToDtype + Normalize + timm-style mixup on the "
        "batch tensor; DALI: crop_mirror_normalize + the same mixup). One core: everything pinned with `taskset -c 0` "
        "(augserve's and DALI's helper threads share it). All cores: Python peers one process per core, DALI one pipeline "
        "with a thread per core, augserve `--threads N`. augserve runs its default (Pillow-exact) resize; its second row adds "
        "the spec's `dct_scaling = true` (crops at least twice the output decoded at 1/2-1/8 scale in libjpeg-turbo's IDCT: "
        "mean 0.43 levels from the exact output, 99th percentile 3; the peers decode at full size).",
        "",
        f"Peer versions: {', '.join(f'{k} {v}' for k, v in versions.items())}.",
        "",
        "## Ratios",
        "",
        *ratio_rows(rates, a.cores),
        "",
        "| figure | value | target | met |",
        "| --- | ---: | --- | --- |",
        decode_alone_row(rates, a.work),
        "",
        "![augserve beside every peer](peers.png)",
        "",
        "## Figures",
        "",
        "`benches/peers.py --corpus <corpus> --mode <output> --procs <cores>` (each peer reads the corpus into memory, "
        "then is warmed up and timed) and `augserve run --data <corpus> --spec <output>.toml --threads <cores> "
        f"--batch-size 256 --epochs E` for E = 1 and {a.long_epochs} (files read from the page cache during the run; "
        "the peers read theirs into memory first). augserve's rows are its steady rate, (images(long) - images(1)) / "
        "(seconds(long) - seconds(1)), so start-up and the pipeline's fill and drain cancel out, as the peers are timed "
        f"after a warm-up; the `whole {a.long_epochs}-epoch run` rows are the long runs' own rates, all of that included:",
        "",
        *figure_rows(rates, a.cores, a.long_epochs),
        *decoder_rows(a.work),
        "`augserve bench --data <ImageNet-size corpus> --batches 4` (ms per batch per stage; read/decode/colour summed "
        "over threads):",
        "",
        "```",
        (a.work / "bench" / "bench.txt").read_text().rstrip(),
        "```",
        "",
        "![augserve bench](bench.png)",
        "",
        f"`benches/service_compare.py --corpus <ImageNet-size corpus> --spec float16.toml --threads {a.cores}` (median of 3 "
        f"runs of 2 epochs; server with {a.cores} worker threads on the same machine as the client; DataLoader-style = "
        f"{a.cores} worker processes running the Pillow peer with torch normalisation, batches pickled to the parent):",
        "",
        "| delivered to | images/s | MB/s | / in process |",
        "| --- | ---: | ---: | ---: |",
        *[f"| {k.replace('_', ' ')} | {v['images_per_s']:.0f} | {v['mb_per_s']:.0f} | {v['images_per_s'] / in_proc:.2f} |"
          for k, v in service.items()],
        "",
    ]
    (a.out / "summary.md").write_text("\n".join(lines))
    for f in ("bench.json", "bench.csv", "bench.png"):
        shutil.copy(a.work / "bench" / f, a.out / f)
    shutil.copy(a.work / "service.json", a.out / "service.json")
    for c in CORPORA:
        if (a.work / f"{c}-decoders.json").exists():
            shutil.copy(a.work / f"{c}-decoders.json", a.out / f"{c}-decoders.json")
    for f in a.work.glob("imagenet-decoders-*.json"):
        shutil.copy(f, a.out / f.name)
    (a.out / "peers.json").write_text(json.dumps(
        {"versions": versions, "images_per_s": {"/".join(map(str, k)): v for k, v in rates.items()}}, indent=2) + "\n")
    print((a.out / "summary.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
