package sched

import (
	"net"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"sync/atomic"
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

// TestYielderLetsThePollerIn: on one P, a goroutine that never blocks and
// moves "bytes" through a Yielder must let a reader the network poller
// wakes run within a couple of intervals: at most 2*YieldMax bytes after the
// byte was written. Without the Yielder (or with runtime.Gosched in its
// place) the reader waits for sysmon's poll, 10 ms later: tens of
// thousands of calls here.
func TestYielderLetsThePollerIn(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	w, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	r, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()

	const chunk = 64 << 10
	var calls atomic.Int64
	stop := make(chan struct{})
	spun := make(chan struct{})
	go func() {
		defer close(spun)
		var y Yielder
		for {
			select {
			case <-stop:
				return
			default:
			}
			calls.Add(1)
			y.Moved(chunk)
		}
	}()
	got := make(chan int64, 1)
	go func() {
		b := make([]byte, 1)
		r.Read(b)
		got <- calls.Load()
	}()
	for calls.Load() < 1000 {
		runtime.Gosched() // the spinner has settled its interval
	}
	at := calls.Load()
	if _, err := w.Write([]byte{1}); err != nil {
		t.Fatal(err)
	}
	woke := <-got
	close(stop)
	<-spun
	if d := woke - at; d > 2*YieldMax/chunk {
		t.Fatalf("the reader ran %d calls (%d MiB) after its byte was written, want at most %d", d, d*chunk>>20, 2*YieldMax/chunk)
	} else {
		t.Logf("the reader ran %d calls (%d KiB) after its byte was written", d, d*chunk>>10)
	}
}
