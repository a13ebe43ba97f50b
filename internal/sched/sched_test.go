package sched

import (
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"testing"
)

func TestEnviron(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   []string
		want string // the GODEBUG entry
	}{
		{"none", []string{"A=1"}, "GODEBUG=" + Setting},
		{"empty", []string{"GODEBUG="}, "GODEBUG=" + Setting},
		{"others", []string{"GODEBUG=gctrace=1"}, "GODEBUG=gctrace=1," + Setting},
		{"operator's own", []string{"GODEBUG=schedtrace=0"}, "GODEBUG=schedtrace=0"},
		{"operator's own among others", []string{"GODEBUG=gctrace=1, schedtrace=1000"}, "GODEBUG=gctrace=1, schedtrace=1000"},
		{"a longer name is not schedtrace", []string{"GODEBUG=xschedtrace=1"}, "GODEBUG=xschedtrace=1," + Setting},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := Environ(tc.in)
			var gd []string
			for _, kv := range got {
				if strings.HasPrefix(kv, "GODEBUG=") {
					gd = append(gd, kv)
				}
			}
			if len(gd) != 1 || gd[0] != tc.want {
				t.Errorf("Environ(%q) GODEBUG = %q, want [%q]", tc.in, gd, tc.want)
			}
			for _, kv := range tc.in {
				if !strings.HasPrefix(kv, "GODEBUG=") && !slices.Contains(got, kv) {
					t.Errorf("Environ(%q) lost %q", tc.in, kv)
				}
			}
		})
	}
}

// TestReexec runs the test binary as a child that calls Reexec and prints
// its GODEBUG: the image that prints it has the setting.
func TestReexec(t *testing.T) {
	if os.Getenv("SCHED_TEST_CHILD") == "1" {
		if err := Reexec(); err != nil {
			t.Fatal(err)
		}
		os.Stdout.WriteString("GODEBUG=" + os.Getenv("GODEBUG") + "\n")
		return
	}
	for _, tc := range []struct{ env, want string }{
		{"", "GODEBUG=" + Setting},
		{"GODEBUG=gctrace=0", "GODEBUG=gctrace=0," + Setting},
		{"GODEBUG=schedtrace=0", "GODEBUG=schedtrace=0"},
	} {
		cmd := exec.Command(os.Args[0], "-test.run=^TestReexec$")
		cmd.Env = append(os.Environ(), "SCHED_TEST_CHILD=1")
		cmd.Env = slices.DeleteFunc(cmd.Env, func(kv string) bool { return strings.HasPrefix(kv, "GODEBUG=") })
		if tc.env != "" {
			cmd.Env = append(cmd.Env, tc.env)
		}
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("child with %q: %v\n%s", tc.env, err, out)
		}
		if !strings.Contains(string(out), tc.want+"\n") {
			t.Errorf("child with %q printed %q, want a line %q", tc.env, out, tc.want)
		}
	}
}

func TestSetProcs(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(0))
	t.Setenv("GOMAXPROCS", "")
	os.Unsetenv("GOMAXPROCS")
	if got := SetProcs(); got != Procs || runtime.GOMAXPROCS(0) != Procs {
		t.Errorf("without GOMAXPROCS: SetProcs() = %d, GOMAXPROCS %d; want %d", got, runtime.GOMAXPROCS(0), Procs)
	}
	runtime.GOMAXPROCS(3)
	t.Setenv("GOMAXPROCS", "3")
	if got := SetProcs(); got != 3 || runtime.GOMAXPROCS(0) != 3 {
		t.Errorf("with GOMAXPROCS=3: SetProcs() = %d, GOMAXPROCS %d; want 3", got, runtime.GOMAXPROCS(0))
	}
}
