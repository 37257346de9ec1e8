"""`snapflow sim-eval`: closed-loop success on the simulated robot, teacher@10 vs naive teacher@1 vs
student@1 (and optional other step counts), with 95% CIs, latency percentiles, JSON and a plot."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from snapflow_ros.cli.options import write_json


def sim_eval(args: argparse.Namespace) -> dict:
    import torch

    from snapflow_ros.sim.evaluation import (
        Candidate,
        candidate_name,
        evaluate_task,
        overall,
        paired_test,
        write_latency_plot,
        write_plot,
    )
    from snapflow_ros.sim.evaluation_table import format_table
    from snapflow_ros.sim.tasks import get_task, load_tasks

    started = time.perf_counter()
    n = args.teacher_steps
    candidates = [Candidate(candidate_name("teacher", n), args.teacher, n)]
    if "rtc" in args.chunking:  # the inference-time baseline: guided inpainting by the multi-step teacher
        candidates.append(Candidate(candidate_name("teacher", n, "rtc", guided=True), args.teacher, n, "rtc", True))
    candidates += [*[Candidate(candidate_name("teacher", k), args.teacher, k) for k in args.extra_steps],
                   Candidate(candidate_name("teacher", 1), args.teacher, 1)]
    if args.student:
        candidates += [Candidate(candidate_name("student", 1, mode), args.student, 1, mode,
                                 blend_decay=args.blend_decay if mode == "blend" else 0.0) for mode in args.chunking]
    # Paired on the same episodes: each student mode against the first listed (plain by default),
    # guided RTC against the teacher's plain chunks.
    students = [c.name for c in candidates if c.name.startswith("student@1")]
    comparisons = [(name, students[0]) for name in students[1:]]
    if "rtc" in args.chunking:
        comparisons.append((candidates[1].name, candidates[0].name))
    sweep = {}
    for latency_ms in args.latency_ms:  # the robot executes the chunk in force during inference
        per_task = {}
        for name in args.tasks or sorted(load_tasks(args.task_file)):
            per_task[name] = evaluate_task(
                get_task(name, args.task_file), candidates, args.episodes, args.seed, args.image_size,
                args.replan_every, latency_s=latency_ms / 1e3,
                progress=lambda line, ms=latency_ms: print(f"sim-eval [{ms:g} ms]: {line}", file=sys.stderr,
                                                           flush=True))
        sweep[f"{latency_ms:g}"] = {"tasks": per_task, "overall": overall(per_task),
                                    "paired": [paired_test(per_task, a, b) for a, b in comparisons]}
    first = sweep[f"{args.latency_ms[0]:g}"]
    report = {"tasks": first["tasks"], "overall": first["overall"], "paired": first["paired"],
              "settings": {"episodes_per_task": args.episodes, "seed": args.seed, "image_size": args.image_size,
                           "replan_every": args.replan_every, "latency_ms": args.latency_ms,
                           "chunking": args.chunking, "blend_decay": args.blend_decay,
                           "torch_threads": torch.get_num_threads()},
              "wall_seconds": time.perf_counter() - started}
    if len(args.latency_ms) > 1:
        report["latency_sweep"] = sweep  # per simulated latency (ms): tasks and overall, as above
    if args.plot:  # success against latency: measured per chunk, or simulated in a sweep
        (write_latency_plot(sweep, args.plot) if len(sweep) > 1 else write_plot(first["tasks"], args.plot))
        report["plot"] = str(args.plot)
    for latency_ms, rows in sweep.items():
        print(f"simulated inference latency {latency_ms} ms:", file=sys.stderr)
        print(format_table(rows), file=sys.stderr)
    return report


def sim_record(args: argparse.Namespace) -> dict:
    from snapflow_ros.ros.sim_recording import record_demos
    from snapflow_ros.sim.tasks import get_task

    get_task(args.task, args.task_file)  # an unknown task or a broken file fails here, before ROS starts
    path, outcomes = record_demos(args.task, args.episodes, args.output, args.seed, args.image_size, args.rate_hz,
                                  progress=lambda done, total: print(f"sim-record {args.task}: episode {done}/{total}",
                                                                     file=sys.stderr, flush=True),
                                  task_file=args.task_file, real_time=args.real_time)
    if args.bag_config is not None:
        from snapflow_ros.sim.topics import sim_bag_config

        sim_bag_config(args.rate_hz).write_yaml(args.bag_config)
    return {"bag": str(path), "task": args.task, **outcomes,
            "bag_config": None if args.bag_config is None else str(args.bag_config)}


def sim_demo(args: argparse.Namespace) -> int:
    from snapflow_ros.ros.sim_demo import run_sim_demo
    from snapflow_ros.sim.demo_config import SimDemoConfig
    from snapflow_ros.sim.tasks import get_task

    for task in args.tasks:
        get_task(task, args.task_file)
    config = SimDemoConfig(workdir=args.workdir, tasks=tuple(args.tasks), demo_episodes=args.demo_episodes,
                           teacher_steps=args.teacher_steps, student_steps=args.student_steps,
                           eval_episodes=args.eval_episodes, ros_episodes=args.ros_episodes, seed=args.seed,
                           task_file=args.task_file)
    run_sim_demo(config)
    return 0


def sim_table(args: argparse.Namespace) -> int:
    from snapflow_ros.ros.sim_table import run_sim_table
    from snapflow_ros.sim.demo_config import SimTableConfig

    run_sim_table(SimTableConfig(
        workdir=args.workdir, tasks=tuple(args.tasks), seeds=tuple(args.seeds), demo_episodes=args.demo_episodes,
        teacher_steps=args.teacher_steps, student_steps=args.student_steps, student_lr=args.student_lr,
        consistency_weight=args.consistency_weight, batch_size=args.batch_size, eval_episodes=args.episodes,
        task_file=args.task_file, resamples=args.resamples, report_dir=args.report_dir))
    return 0


def add_task_file_flag(parser: argparse.ArgumentParser) -> None:
    from snapflow_ros.sim.tasks import load_tasks  # cheap: Meta-World loads when a robot is built

    parser.add_argument("--task-file", type=Path, default=None,
                        help="Python file defining TASKS, a list of snapflow_ros.sim.tasks.SimTask, added to the "
                        "built-in tasks (" + ", ".join(load_tasks()) + ")")


def add_commands(commands: argparse._SubParsersAction) -> None:
    from snapflow_ros.sim.demo_config import SimDemoConfig

    d = SimDemoConfig()
    p = commands.add_parser("sim-demo", help="the main job: demos -> bags -> teacher -> SnapFlow over ROS -> "
                            "hot swap -> closed loop, on the simulated robot",
                            description="Record expert demonstrations through ROS into bags, train a teacher on "
                            "them, distil a student through policy_node's distillation service while the node serves "
                            "the robot, let the node hot-swap to it, drive the simulated robot with it through ROS, "
                            "and measure teacher@10 / naive teacher@1 / student@1 closed loop. Bags and the teacher "
                            "are cached in --workdir.")
    p.add_argument("--workdir", type=Path, default=d.workdir, help=f"default: {d.workdir}")
    p.add_argument("--tasks", nargs="+", default=list(d.tasks), help=f"simulated tasks (default: {' '.join(d.tasks)})")
    add_task_file_flag(p)
    p.add_argument("--demo-episodes", type=int, default=d.demo_episodes,
                   help=f"expert episodes recorded per task (default: {d.demo_episodes})")
    p.add_argument("--teacher-steps", type=int, default=d.teacher_steps, help=f"default: {d.teacher_steps}")
    p.add_argument("--student-steps", type=int, default=d.student_steps, help=f"default: {d.student_steps}")
    p.add_argument("--eval-episodes", type=int, default=d.eval_episodes,
                   help=f"sim-eval episodes per task and policy (default: {d.eval_episodes})")
    p.add_argument("--ros-episodes", type=int, default=d.ros_episodes,
                   help=f"closed-loop episodes per task through ROS after the swap (default: {d.ros_episodes})")
    p.add_argument("--seed", type=int, default=d.seed, help=f"default: {d.seed}")
    p.set_defaults(run=sim_demo)

    from snapflow_ros.sim.demo_config import SimTableConfig

    t = SimTableConfig()
    p = commands.add_parser("sim-table", help="the comparison over several seeds: teacher@10, teacher@2, naive "
                            "teacher@1 and student@1 on every task, with intervals and paired tests",
                            description="For each seed: record demonstrations (stepped, reproducible), train a "
                            "teacher, distil a student, and run the four policies on the same episodes of every task. "
                            "Reports success per seed, the mean over seeds with a 95% t interval, the pooled Wilson "
                            "interval and paired tests (exact McNemar, bootstrap) of student@1 against teacher@1 and "
                            "teacher@10, as JSON, Markdown and SVG. Every stage is cached in --workdir.")
    p.add_argument("--workdir", type=Path, default=t.workdir, help=f"default: {t.workdir}")
    p.add_argument("--tasks", nargs="+", default=list(t.tasks), help=f"default: {' '.join(t.tasks)}")
    add_task_file_flag(p)
    p.add_argument("--seeds", type=int, nargs="+", default=list(t.seeds),
                   help="independent seeds (recording, teacher, student, evaluation); at least 3 (default: 0 1 2)")
    p.add_argument("--demo-episodes", type=int, default=t.demo_episodes,
                   help=f"per task and seed (default: {t.demo_episodes})")
    p.add_argument("--teacher-steps", type=int, default=t.teacher_steps, help=f"default: {t.teacher_steps}")
    p.add_argument("--student-steps", type=int, default=t.student_steps, help=f"default: {t.student_steps}")
    p.add_argument("--student-lr", type=float, default=t.student_lr,
                   help=f"distillation learning rate (default: {t.student_lr:g})")
    p.add_argument("--consistency-weight", type=float, default=t.consistency_weight,
                   help=f"SnapFlow's lambda (default: {t.consistency_weight:g}). Students of other settings than the "
                   "defaults sit beside the default one in each seed and reuse its recordings, teacher and "
                   "teacher rows")
    p.add_argument("--batch-size", type=int, default=t.batch_size, help=f"default: {t.batch_size}")
    p.add_argument("--episodes", type=int, default=t.eval_episodes,
                   help=f"evaluation episodes per policy, task and seed (default: {t.eval_episodes})")
    p.add_argument("--resamples", type=int, default=t.resamples,
                   help=f"paired bootstrap resamples (default: {t.resamples})")
    p.add_argument("--report-dir", type=Path, default=None,
                   help="report.json, table.md and the plot go here (default: --workdir)")
    p.set_defaults(run=sim_table)

    p = commands.add_parser("sim-record", help="record expert demonstrations of a simulated task as a bag",
                            description="Run sim_robot in expert mode and record its topics (camera, joint states, "
                            "the expert's joint_commands, instruction, episode_start) into an MCAP bag, through ROS "
                            "like `ros2 bag record`. Read it with the config of "
                            "snapflow_ros.sim.topics.sim_bag_config.")
    p.add_argument("--task", required=True, help="simulated task")
    add_task_file_flag(p)
    p.add_argument("--episodes", type=int, default=40, help="episodes to record (default: 40)")
    p.add_argument("--output", type=Path, required=True, help="bag directory to write")
    p.add_argument("--seed", type=int, default=0, help="seed of layouts and route choices (default: 0)")
    p.add_argument("--image-size", type=int, default=32, help="camera image side in pixels (default: 32)")
    p.add_argument("--rate-hz", type=float, default=20.0, help="control rate (default: 20)")
    p.add_argument("--real-time", action="store_true",
                   help="run the robot on its timer against the wall clock, as on a robot; by default it is "
                   "stepped on a simulated clock as fast as the machine allows, and the bag depends on the seed only")
    p.add_argument("--bag-config", type=Path, default=None,
                   help="also write the bag dataset YAML that reads this recording (train-teacher, distill, "
                   "ablate --bags ... --bag-config FILE)")
    p.set_defaults(run=lambda a: write_json(sim_record(a), None))

    p = commands.add_parser("sim-eval", help="closed-loop success on the simulated robot, with 95%% CIs",
                            description="Run each policy for --episodes episodes per task on the Meta-World robot "
                            "(same layouts for every policy), the way the node serves it, and report success with "
                            "95% Wilson intervals, failure reasons and per-chunk latency percentiles.")
    p.add_argument("--teacher", type=Path, required=True, help="teacher checkpoint (run at --teacher-steps and 1 step)")
    p.add_argument("--student", type=Path, default=None, help="SnapFlow student checkpoint (run at 1 step)")
    p.add_argument("--tasks", nargs="+", default=None, help="tasks (default: all, with those of --task-file)")
    add_task_file_flag(p)
    p.add_argument("--episodes", type=int, default=30, help="episodes per task and policy (default: 30)")
    p.add_argument("--seed", type=int, default=1000, help="seed of the evaluation layouts (default: 1000)")
    p.add_argument("--teacher-steps", type=int, default=10, help="teacher's expert passes (default: 10)")
    p.add_argument("--extra-steps", type=int, nargs="*", default=[], help="also run the teacher at these step counts")
    p.add_argument("--image-size", type=int, default=32, help="camera image side in pixels (default: 32)")
    p.add_argument("--replan-every", type=int, default=8,
                   help="the chunk timer's period in environment steps: a new chunk every N steps, run by "
                   "policy_node's ChunkExecutor (default: 8, the whole chunk of the demo's policies, as "
                   "policy_node with watermark 0.9 drives sim_robot; past a chunk's end its last action holds)")
    p.add_argument("--latency-ms", type=float, nargs="+", default=[0.0],
                   help="simulated inference latency per chunk, one evaluation each (e.g. 0 100 200 300): the "
                   "robot keeps executing the chunk in force meanwhile, stale actions are dropped (default: 0)")
    p.add_argument("--chunking", nargs="+", choices=["plain", "blend", "rtc"], default=["plain"],
                   help="how the student's chunks meet (policy_node's chunking parameter), one evaluation each: "
                   "plain (stale actions dropped, then switch), blend (the overlap mixed, --blend-decay), rtc (the "
                   "actions executing during inference given as a committed prefix; a student distilled with "
                   "--max-delay continues them). With rtc the teacher also runs guided RTC at --teacher-steps "
                   "(inference-time inpainting, LeRobot's RTC). Default: plain")
    p.add_argument("--blend-decay", type=float, default=0.5,
                   help="blend's weight of the previous chunk, exp(-decay * k) (default: 0.5)")
    p.add_argument("--json", type=Path, default=Path("runs/sim-eval/report.json"), help="report file")
    p.add_argument("--plot", type=Path, default=Path("runs/sim-eval/success_vs_latency.svg"), help="plot file (SVG)")
    p.set_defaults(run=lambda a: write_json(sim_eval(a), a.json))
