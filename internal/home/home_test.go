package home

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestWriteFileAtomicReplaces(t *testing.T) {
	p := filepath.Join(t.TempDir(), "state.json")
	if err := WriteFileAtomic(p, []byte("one"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := WriteFileAtomic(p, []byte("two"), 0o600); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(p)
	st, _ := os.Stat(p)
	if string(b) != "two" || st.Mode().Perm() != 0o600 {
		t.Fatalf("got %q mode %v", b, st.Mode())
	}
}

// TestWriteFileAtomicFullDisk fills a small tmpfs: the write fails with a
// clear error, the old file is intact, and no temporary file is left.
func TestWriteFileAtomicFullDisk(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a small tmpfs")
	}
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", dir).CombinedOutput(); err != nil {
		t.Skipf("cannot mount tmpfs: %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", dir).Run() })
	p := filepath.Join(dir, "state.json")
	if err := WriteFileAtomic(p, []byte(`{"old":true}`), 0o600); err != nil {
		t.Fatal(err)
	}
	// Fill the rest of the file system.
	f, _ := os.Create(filepath.Join(dir, "filler"))
	f.Write(make([]byte, 1<<20))
	f.Close()
	err := WriteFileAtomic(p, bytes.Repeat([]byte("x"), 32<<10), 0o600)
	if err == nil || !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("err = %v, want ENOSPC", err)
	}
	if !strings.Contains(err.Error(), "state.json") || strings.Contains(err.Error(), "\n") {
		t.Errorf("error does not name the file in one line: %q", err)
	}
	b, _ := os.ReadFile(p)
	if string(b) != `{"old":true}` {
		t.Fatalf("old file damaged: %q", b)
	}
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if strings.Contains(e.Name(), ".tmp") {
			t.Errorf("temporary file left: %s", e.Name())
		}
	}
}

func TestReadStateErrors(t *testing.T) {
	h := Home{Dir: t.TempDir()}
	if _, err := h.ReadState("nope"); !errors.Is(err, ErrNoNode) {
		t.Fatalf("missing node: %v", err)
	}
	if _, err := h.ReadState("../x"); err == nil {
		t.Fatal("bad name accepted")
	}
	os.MkdirAll(h.NodeDir("n"), 0o700)
	os.WriteFile(h.StatePath("n"), []byte("{garbage"), 0o600)
	if _, err := h.ReadState("n"); err == nil || !strings.Contains(err.Error(), "corrupt state file") {
		t.Fatalf("corrupt state: %v", err)
	}
	os.WriteFile(h.StatePath("n"), make([]byte, MaxStateFile+1), 0o600)
	if _, err := h.ReadState("n"); err == nil || !strings.Contains(err.Error(), "limit") {
		t.Fatalf("oversize state: %v", err)
	}
}

func TestPrivateDir(t *testing.T) {
	base := t.TempDir()
	open := filepath.Join(base, "run")
	if err := os.Mkdir(open, 0o777); err != nil {
		t.Fatal(err)
	}
	os.Chmod(open, 0o777) // past the umask
	if err := PrivateDir(open); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(open); fi.Mode().Perm() != 0o700 {
		t.Fatalf("mode %v after PrivateDir, want 0700", fi.Mode().Perm())
	}
	link := filepath.Join(base, "link")
	os.Symlink(open, link)
	if err := PrivateDir(link); err == nil || !strings.Contains(err.Error(), "not a directory") {
		t.Fatalf("PrivateDir on a symbolic link: %v, want a refusal", err)
	}
	fresh := filepath.Join(base, "a", "b")
	if err := PrivateDir(fresh); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(fresh); fi.Mode().Perm() != 0o700 {
		t.Fatalf("new directory mode %v, want 0700", fi.Mode().Perm())
	}
}

// A configuration written before the registry (a list per kind) is read as
// resources, so `node start` after an upgrade brings everything back.
func TestReadLegacyConfig(t *testing.T) {
	t.Parallel()
	h := Home{Dir: t.TempDir()}
	legacy := `{"listen":"127.0.0.1:4000","identity":"n",
	 "outlets":[{"name":"o","from":"/service/outlet","to":"127.0.0.1:5000"}],
	 "relays":[{"name":"r","at":"/ip4/127.0.0.1/tcp/1"}],
	 "channels":[{"address":"abc","to":"/ip4/127.0.0.1/tcp/1/service/api"}],
	 "inlets":[{"name":"i","from":"127.0.0.1:6000","to":"/service/abc/service/outlet"}]}`
	if err := WriteFileAtomic(h.ConfigPath("n"), []byte(legacy), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := h.ReadConfig("n")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range c.Resources {
		got = append(got, r.Kind+":"+r.Key)
	}
	if strings.Join(got, " ") != "outlet:o relay:r channel:abc inlet:i" || c.Listen != "127.0.0.1:4000" {
		t.Fatalf("resources %v, listen %q", got, c.Listen)
	}
	if err := h.WriteConfig("n", c); err != nil {
		t.Fatal(err)
	}
	again, _ := h.ReadConfig("n")
	if len(again.Resources) != 4 {
		t.Fatalf("after rewriting: %+v", again.Resources)
	}
}

// TestRunning: a node's process is running while it lives (even once its
// command line is gone: it may still hold its sockets), and not once it is
// a zombie, nor when its PID now belongs to a kernel thread or another
// program.
func TestRunning(t *testing.T) {
	if _, err := os.Stat("/proc/self/stat"); err != nil {
		t.Skip("no /proc")
	}
	c := exec.Command("sleep", "60", "mynode")
	if err := c.Start(); err != nil {
		t.Skip("no sleep:", err)
	}
	defer c.Process.Kill()
	st := &NodeState{Name: "mynode", PID: c.Process.Pid}
	if !st.Running() {
		t.Fatal("a live process with the node's name is not running")
	}
	if other := (&NodeState{Name: "othernode", PID: c.Process.Pid}); other.Running() {
		t.Fatal("a reused PID (another command line) is taken for the node")
	}
	if k := (&NodeState{Name: "kthreadd", PID: 2}); k.Running() {
		t.Fatal("a kernel thread (no command line) is taken for the node")
	}
	// A zombie: killed, not yet waited for.
	c.Process.Signal(syscall.SIGKILL)
	deadline := time.Now().Add(5 * time.Second)
	for {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", c.Process.Pid))
		if f := strings.Fields(string(b)); len(f) > 2 && f[2] == "Z" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the killed process did not become a zombie")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if st.Running() {
		t.Fatal("a zombie is running")
	}
	c.Wait()
}
