package main

import (
	"flag"
	"fmt"
	"log/slog"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// EnvPrefix starts the environment variables that set the relay's flags:
// OCKAM_RELAY_LISTEN for --listen, OCKAM_RELAY_MAX_CONNS for --max-conns,
// and so on (a systemd EnvironmentFile is the relay's configuration file).
// A flag given on the command line wins. --authorized takes identifiers
// separated by commas or spaces.
const EnvPrefix = "OCKAM_RELAY_"

func envName(flagName string) string {
	return EnvPrefix + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

func flagsFromEnv(fs *flag.FlagSet) error {
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		v, ok := os.LookupEnv(envName(f.Name))
		if !ok || err != nil {
			return
		}
		vals := []string{v}
		if f.Name == "authorized" {
			vals = strings.FieldsFunc(v, func(r rune) bool { return r == ',' || r == ' ' || r == '\n' })
		}
		for _, x := range vals {
			if e := f.Value.Set(x); e != nil {
				err = fmt.Errorf("%s=%q: %v", envName(f.Name), x, e)
				return
			}
		}
	})
	return err
}

// logger logs text on a terminal (or with format text) and JSON otherwise
// (journald, files, collectors).
func logger(format string, level slog.Level) (*slog.Logger, error) {
	opts := &slog.HandlerOptions{Level: level}
	switch format {
	case "":
		if _, err := unix.IoctlGetTermios(int(os.Stderr.Fd()), unix.TCGETS); err == nil {
			return slog.New(slog.NewTextHandler(os.Stderr, opts)), nil
		}
		return slog.New(slog.NewJSONHandler(os.Stderr, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(os.Stderr, opts)), nil
	case "text":
		return slog.New(slog.NewTextHandler(os.Stderr, opts)), nil
	}
	return nil, fmt.Errorf("--log-format %q: want json or text", format)
}
