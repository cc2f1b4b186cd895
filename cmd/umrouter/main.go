// Command umrouter is the SIP router daemon and its command-line tools.
//
//	umrouter run [--config FILE]     run the daemon (built-in default without --config)
//	umrouter config check FILE       validate a configuration file
//	umrouter config default          print the built-in default configuration
//	umrouter cert ...                the certificate store (new, request, import, list, enable, export, remove)
//	umrouter ctl COMMAND ...         drive a running daemon: status, reload, drain, backend ADDRESS STATE
//	umrouter health [--ready]        probe a running daemon's /healthz (or /readyz), exit 0 or 1
//	umrouter version                 print version information
//
// Exit codes: 0 success, 1 failure (invalid configuration, daemon error),
// 2 usage error.
package main

import (
	"context"
	_ "embed"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"syscall"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

// defaultConfig is the configuration `umrouter run` uses without --config:
// it starts on a fresh machine and refuses every peer until gateways are
// configured.
//
//go:embed default.yaml
var defaultConfig []byte

const usage = `usage:
  umrouter run [--config FILE]     run the daemon (built-in default configuration without --config)
  umrouter config check FILE       validate a configuration file; prints FILE:LINE: path: message
  umrouter config default          print the built-in default configuration
  umrouter cert ...                manage the certificate store (umrouter cert --help)
  umrouter ctl COMMAND [flags]     drive a running daemon's admin API: status, reload, drain,
                                   backend ADDRESS STATE (umrouter ctl --help)
  umrouter health [flags]          probe a running daemon's /healthz (--ready: /readyz); exit 0 or 1
  umrouter version                 print version information
`

func main() {
	// SIGTERM and SIGINT stop the daemon gracefully; SIGHUP is handled by
	// the daemon itself (reload), so it is not part of this context.
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	go func() {
		// A second signal during the drain takes its default action: a
		// person pressing Ctrl-C twice means "now".
		<-ctx.Done()
		stop()
	}()
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run executes the command line args (without the program name) and returns
// the process exit code. ctx stands for the process's life: cancelling it is
// what SIGTERM does to the daemon.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	switch args[0] {
	case "run":
		return cmdRun(ctx, args[1:], stderr)
	case "config":
		return cmdConfig(args[1:], stdout, stderr)
	case "cert":
		return runCert(args[1:], stdout, stderr)
	case "ctl":
		return cmdCtl(ctx, args[1:], stdout, stderr)
	case "health":
		return cmdHealth(ctx, args[1:], stdout, stderr)
	case "version":
		return cmdVersion(args[1:], stdout, stderr)
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "umrouter: unknown command %q\n%s", args[0], usage)
		return 2
	}
}

// parseFlags parses args with fs, reporting errors on stderr; it returns the
// exit code to use when the caller should stop (-1 to go on).
func parseFlags(fs *flag.FlagSet, args []string, stderr io.Writer) int {
	fs.SetOutput(stderr)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	return -1
}

func cmdConfig(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprintf(stderr, "umrouter config: missing subcommand\n%s", usage)
		return 2
	}
	switch args[0] {
	case "check":
		fs := flag.NewFlagSet("config check", flag.ContinueOnError)
		fs.Usage = func() { fmt.Fprintln(stderr, "usage: umrouter config check FILE") }
		if code := parseFlags(fs, args[1:], stderr); code >= 0 {
			return code
		}
		if fs.NArg() != 1 {
			fs.Usage()
			return 2
		}
		return configCheck(fs.Arg(0), stdout, stderr)
	case "default":
		fs := flag.NewFlagSet("config default", flag.ContinueOnError)
		if code := parseFlags(fs, args[1:], stderr); code >= 0 {
			return code
		}
		_, _ = stdout.Write(defaultConfig)
		return 0
	default:
		fmt.Fprintf(stderr, "umrouter config: unknown subcommand %q\n%s", args[0], usage)
		return 2
	}
}

// configCheck validates file and prints every problem as FILE:LINE: path:
// message on stdout (the report is the command's output, for editors and CI
// to parse); it returns 1 if any, else prints "FILE: ok" and returns 0.
func configCheck(file string, stdout, stderr io.Writer) int {
	data, err := os.ReadFile(file)
	if err != nil {
		fmt.Fprintf(stderr, "umrouter config check: %v\n", err)
		return 1
	}
	_, problems := loadConfig(data, os.Getenv)
	for _, p := range problems {
		fmt.Fprintln(stdout, p.format(file))
	}
	if len(problems) > 0 {
		return 1
	}
	fmt.Fprintf(stdout, "%s: ok\n", file)
	return 0
}

func cmdVersion(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("version", flag.ContinueOnError)
	if code := parseFlags(fs, args, stderr); code >= 0 {
		return code
	}
	fmt.Fprintf(stdout, "umrouter %s (%s, sipgo %s)\n", version, runtime.Version(), moduleVersion("github.com/emiago/sipgo"))
	return 0
}

// moduleVersion reports the version of module path linked into this binary,
// "unknown" when the build carries no such information.
func moduleVersion(path string) string {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	for _, dep := range info.Deps {
		if dep.Path == path {
			if dep.Replace != nil {
				return dep.Replace.Version + " (replaced)"
			}
			return dep.Version
		}
	}
	return "unknown"
}
