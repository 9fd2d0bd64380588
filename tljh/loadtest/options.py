"""The command line of `tljh loadtest`, apart from the run: every `tljh` command builds its whole parser, and the
run's module imports aiohttp and the hub's account code (0.4 s of every `tljh` command's start, measured with
python -X importtime)."""


def add_arguments(parser):
    parser.add_argument("--users", type=int, default=10, help="simulated people (default 10)")
    parser.add_argument("--ramp", type=float, default=0.0,
                        help="seconds over which they arrive, evenly spread; 0 = all at once (default 0)")
    parser.add_argument("--session", type=float, default=20.0,
                        help="seconds each person runs code once their kernel is open (default 20)")
    parser.add_argument("--no-kernel", dest="kernel", action="store_false",
                        help="people open JupyterLab and stay for --session seconds without opening a notebook (no "
                             "kernel, no code), then stop: how many servers the machine holds at once")
    parser.add_argument("--think", type=float, default=1.0, help="seconds between two runs of the code (default 1)")
    parser.add_argument("--code", default="sum(i * i for i in range(10_000))",
                        help="the code each person runs (default: a few ms of Python)")
    parser.add_argument("--profile", action="append", default=[], metavar="SLUG[:OPTION=CHOICE,...]",
                        help="the picker's profile to choose; repeat to spread people over profiles in turn")
    parser.add_argument("--via", choices=("form", "api"), default="form",
                        help="start servers through the pages (form, default) or the REST API with user_options")
    parser.add_argument("--single", type=int, default=5,
                        help="single-user visits before the load, for this run's spawn median and CPU per start "
                             "(default 5; 0 = none)")
    parser.add_argument("--prefix", default="loadtest-", help="name prefix of the simulated people (default loadtest-)")
    parser.add_argument("--url", help="the hub's address (default: this server's http port and base_url)")
    parser.add_argument("--timeout", type=float, default=900.0,
                        help="longest a person waits in one phase before giving up (default 900 s)")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between resource samples (default 1)")
    parser.add_argument("--json", metavar="FILE", default="loadtest.json", help="report as JSON (default loadtest.json)")
    parser.add_argument("--png", metavar="FILE", default="loadtest.png",
                        help="timeline picture (default loadtest.png; 'none' = no picture)")
    parser.add_argument("--keep-users", action="store_true",
                        help="keep the simulated people's hub users and Unix accounts afterwards")
    parser.add_argument("--allow-real-users", action="store_true",
                        help="run even though the hub has users who are not simulated (they will feel the load)")
