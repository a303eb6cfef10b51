"""The short table `make bench` prints from a results dict: figure, comparison, measured, goal, ok/MISS."""

from __future__ import annotations


def _ok(flag) -> str:
    return "" if flag is None else ("ok" if flag else "MISS")


def table(results: dict) -> str:
    """The short table `make bench` prints: figure, what is compared, measured, goal, ok/MISS."""
    rows = [("figure", "comparison", "measured", "goal", "")]
    figs = results["figures"]

    def skipped(name, fig):
        if "skipped" in fig or "error" in fig:
            text = fig.get("skipped") or f"ERROR: {fig['error']}"
        else:
            text = "no summary ratio; see results.json"
        rows.append((name, text, "", "", ""))

    if "overhead" in figs:
        f = figs["overhead"]
        if "ratio" in f:
            what = f"deco.train step / bare loop ({f['size']}, {f['projector']}, b{f['batch_size']})"
            rows.append(
                ("1 overhead", what, f"{f['ratio']:.3f}x ({f['overhead_ms']:+.1f} ms)", f["goal"], _ok(f["meets_goal"]))
            )
        else:
            skipped("1 overhead", f)
    if "compression" in figs:
        f = figs["compression"]
        if "figure2" in f:
            for size, block in f["figure2"].items():
                if not isinstance(block, dict) or "projectors" not in block:
                    continue
                for label, row in block["projectors"].items():
                    if "time_ratio" in row:
                        measured = f"{row['time_ratio']:.3f} vs {row['flop_ratio']:.3f} ({100 * row['rel_diff']:+.0f}%)"
                        share = (
                            f", {100 * row['uncounted_share']:.0f}% of its step uncounted"
                            if "uncounted_share" in row
                            else ""
                        )
                        rows.append(
                            (
                                "2 compression",
                                f"{size}: {label} / {block['baseline']} step time vs FLOPs{share}",
                                measured,
                                "(whole step)",
                                "",
                            )
                        )
                        if "counted_time_ratio" in row:
                            measured = (
                                f"{row['counted_time_ratio']:.3f} vs {row['flop_ratio']:.3f} "
                                f"({100 * row['counted_rel_diff']:+.0f}%)"
                            )
                            rows.append(
                                (
                                    "2 compression",
                                    f"{size}: {label} / {block['baseline']} time of FLOP-counted "
                                    "ops vs FLOPs (like with like)",
                                    measured,
                                    "within 10%",
                                    _ok(row["counted_meets_goal"]),
                                )
                            )
                    elif "flops" in row and "step" not in row and label != block["baseline"]:
                        rows.append(
                            (
                                "2 compression",
                                f"{size}: {label} / {block['baseline']} FLOPs",
                                f"{row['flop_ratio']:.3f}",
                                "",
                                "",
                            )
                        )
            mem = f["figure3"]
            for label, row in mem["projectors"].items():
                rows.append(
                    (
                        "3 params/memory",
                        f"{mem['size']} b{mem['batch_size']} {label}: trainable / peak",
                        f"{row['trainable_params'] / 1e6:.2f} M / {row['peak_bytes'] / 2**20:.1f} MiB",
                        "",
                        "",
                    )
                )
        else:
            skipped("2 compression", f)
    if "generation" in figs:
        for attn, f in figs["generation"].items():
            if "ratio" in f:
                rows.append(
                    (
                        "4 generation",
                        f"{f['batch_size']} x batch 1 / batch {f['batch_size']} time "
                        f"({f['size']}, {f['projector']}, {f['attention']}"
                        + (", images pre-encoded)" if f.get("llm_only") else ")"),
                        f"{f['ratio']:.2f}x",
                        f["goal"],
                        _ok(f["meets_goal"]),
                    )
                )
            else:
                skipped("4 generation", f)
    if "transformers" in figs:
        f = figs["transformers"]
        if "sizes" in f:
            for size, row in f["sizes"].items():
                same = "same tokens" if all(row["tokens_equal"].values()) else "TOKENS DIFFER"
                rows.append(
                    (
                        "7 vs transformers",
                        f"deco / LlavaForConditionalGeneration generate, static cache, same "
                        f"tower depth ({size}, b{row['batch_size']}, {row['visual_tokens']} visual tokens, {same})",
                        f"{row['ratio']:.3f}x (CPU {row['cpu_ratio']:.3f}x; vs stock generate "
                        f"{row.get('over_stock_generate', float('nan')):.3f}x; before {row['before_ratio']:.3f}x)",
                        row["goal"],
                        _ok(row["meets_goal"]),
                    )
                )
        else:
            skipped("7 vs transformers", f)
    if "train_transformers" in figs:
        f = figs["train_transformers"]
        if "sizes" in f:
            for size, row in f["sizes"].items():
                same = "loss equal" if row["loss_equal"] else "LOSS DIFFERS"
                rows.append(
                    (
                        "11 train vs HF",
                        f"deco / LlavaForConditionalGeneration training step ({size}, "
                        f"b{row['batch_size']}, {row['tower_layers']} tower layers both, {same})",
                        f"{row['ratio']:.3f}x (CPU {row['cpu_ratio']:.3f}x)",
                        row["goal"],
                        _ok(row["meets_goal"] and row["loss_equal"]),
                    )
                )
        else:
            skipped("11 train vs HF", f)
    if "relevance" in figs:
        f = figs["relevance"]
        if "projectors" in f:
            for label, row in f["projectors"].items():
                rows.append(
                    (
                        "5 relevance",
                        f"R-GAE / forward+backward ({f['size']}, {label})",
                        f"{row['ratio']:.2f}x",
                        f["goal"],
                        _ok(row["meets_goal"]),
                    )
                )
        else:
            skipped("5 relevance", f)
    if "data" in figs:
        f = figs["data"]
        if "ratio" in f:
            rows.append(
                (
                    "6 data",
                    f.get("comparison", "loader samples/s / train step samples/s"),
                    f"{f['ratio']:.2f}x",
                    str(f.get("goal", "")),
                    _ok(f.get("meets_goal")),
                )
            )
        else:
            skipped("6 data", f)
    _study_rows(figs, rows, skipped)
    if "gpu" in figs:
        f = figs["gpu"]
        if "projectors" in f:
            for label, row in f["projectors"].items():
                if "error" in row:
                    rows.append(("gpu", f"{f['device']} {label}", row["error"], "", ""))
                    continue
                mfu = "MFU " + (f"{100 * row['mfu']:.1f}%" if row["mfu"] is not None else "n/a")
                goal = f.get("mfu_goal", 0.45)
                rows.append(
                    (
                        "gpu" + (" (smoke)" if f["smoke"] else ""),
                        f"{f['device']} {label} b{row['batch_size']}",
                        f"{row['samples_per_s']:.1f} samples/s, {mfu}",
                        f">= {100 * goal:.0f}% MFU" if not f["smoke"] else "",
                        "" if row["mfu"] is None else _ok(row["mfu"] >= goal),
                    )
                )
            tag = "gpu" + (" (smoke)" if f["smoke"] else "")
            for trainer, row in f.get("lightning", {}).items():
                if not isinstance(row, dict):
                    continue
                text = (
                    f"{row['samples_per_s']:.2f} samples/s"
                    if "samples_per_s" in row
                    else row.get("error", f"composed only ({row.get('strategy')})")
                )
                rows.append(
                    (
                        tag,
                        f"trainer={trainer} {f['lightning']['projector']} b{f['lightning']['batch_size']}",
                        text,
                        "",
                        "",
                    )
                )
            for label, row in f.get("generation", {}).items():
                rows.append(
                    (
                        tag,
                        f"generate {label} b{row['batch_size']} ({row['max_new_tokens']} new tokens)",
                        f"{row['now_new_tokens_per_s']:.0f} tokens/s ({row['before_over_now']:.2f}x before)",
                        "",
                        "" if row["same_tokens"] else "TOKENS DIFFER",
                    )
                )
        else:
            skipped("gpu", f)
    widths = [max(len(str(r[i])) for r in rows) for i in range(5)]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _study_rows(figs: dict, rows: list, skipped) -> None:
    """Figures 8 (tower-feature cache), 10 (time to accuracy) and 9 (llava_json at scale)."""
    if "time_to_accuracy" in figs:
        f = figs["time_to_accuracy"]
        if "cache" not in f:
            skipped("8 cache", f)
        else:
            c = f["cache"]
            load = "load " + "/".join(f"{x:.1f}" for x in c["load_average"])
            rows.append(
                (
                    "8 cache",
                    f"study CPU per run with / without the tower-feature cache ({c['arena_runs']} runs "
                    f"over the same scenes; {load})",
                    f"{c['arena_over_old_cpu']:.2f}x (warm "
                    f"{c['warm_over_old_cpu']:.2f}x, first run {c['cold_over_old_cpu']:.2f}x)",
                    c["goal"],
                    _ok(c["meets_goal"]),
                )
            )
            t = f["tta"]
            if "warm" in t:
                steps = f"steps {t['new']['steps_to_accuracy']} vs {t['old']['steps_to_accuracy']}"
                seeds = f"{len(t['new']['steps_to_accuracy'])} / {len(t['old']['steps_to_accuracy'])} seeds"
                rows.append(
                    (
                        "10 time to acc.",
                        f"new / old default to ex 90, attr 90, grounding 50 ({seeds}, {steps}), CPU (wall)",
                        f"{t['warm']['cpu_ratio']:.2f}x ({t['warm']['wall_ratio']:.2f}x); "
                        f"first run of a study {t['cold']['cpu_ratio']:.2f}x ({t['cold']['wall_ratio']:.2f}x)",
                        t["goal"],
                        _ok(t["meets_goal"]),
                    )
                )
            else:
                skipped("10 time to acc.", t)
    if "llava_scale" in figs:
        f = figs["llava_scale"]
        if "seconds_to_first_step" in f:
            load = f["load_average"][0] if isinstance(f["load_average"][0], (int, float)) else f["load_average"][0][0]
            cpu = f" ({f['cpu_s']:.1f} s CPU)" if "cpu_s" in f else ""
            forced = f.get("background_read_forced") or {}
            other = (
                "; forced " + ", ".join(f"{k} {v['seconds_to_first_step']:.1f} s" for k, v in forced.items())
                if forced
                else ""
            )
            rows.append(
                (
                    "9 llava_json",
                    f"{f['records']:,} records ({f['file_bytes'] / 2**20:.0f} MB): to first step / "
                    f"peak main RSS (load {load:.1f}; phases: python -m experiments.perf.llava_scale)",
                    f"{f['seconds_to_first_step']:.1f} s{cpu} / {f['peak_rss_bytes'] / 2**30:.2f} GiB{other}",
                    f["goal"],
                    _ok(f["meets_goal"]),
                )
            )
        else:
            skipped("9 llava_json", f)
