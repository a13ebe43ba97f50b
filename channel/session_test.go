package channel

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"math"
	mrand "math/rand/v2"
	"net"
	"sync"
	"testing"
)

func seal(t testing.TB, s *Session, pt string) []byte {
	t.Helper()
	msg, err := s.Seal(nil, []byte(pt))
	if err != nil {
		t.Fatal(err)
	}
	return msg
}

func wantOpen(t testing.TB, s *Session, msg []byte, want string) {
	t.Helper()
	pt, err := s.Open(nil, msg)
	if err != nil || string(pt) != want {
		t.Fatalf("Open = %q, %v; want %q", pt, err, want)
	}
}

func wantRefused(t testing.TB, s *Session, msg []byte, want error) {
	t.Helper()
	if pt, err := s.Open(nil, msg); !errors.Is(err, want) || len(pt) != 0 {
		t.Fatalf("Open = %q, %v; want %v", pt, err, want)
	}
}

func TestSealOpenSizes(t *testing.T) {
	a, b := sessionPair(t)
	for _, n := range []int{0, 1, 15, 16, 17, 1000, MaxPayload} {
		pt := make([]byte, n)
		rand.Read(pt)
		prefix := []byte("prefix")
		msg, err := a.Seal(bytes.Clone(prefix), pt)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.HasPrefix(msg, prefix) || len(msg) != len(prefix)+n+Overhead || TypeOf(msg[len(prefix):]) != Data {
			t.Fatalf("Seal(%d) layout wrong: len %d", n, len(msg))
		}
		got, err := b.Open([]byte("x"), msg[len(prefix):])
		if err != nil || !bytes.Equal(got[1:], pt) || got[0] != 'x' {
			t.Fatalf("Open(%d): %v", n, err)
		}
	}
	if _, err := a.Seal(nil, make([]byte, MaxPayload+1)); err == nil {
		t.Fatal("Seal accepted more than MaxPayload")
	}
	if st := b.Stats(); st.Opened != 7 || st.Forged+st.Malformed+st.Replayed+st.TooOld != 0 {
		t.Fatalf("stats %+v", st)
	}
	if st := a.Stats(); st.Sealed != 7 {
		t.Fatalf("stats %+v", st)
	}
}

func TestInPlace(t *testing.T) {
	a, b := sessionPair(t)
	buf := make([]byte, HeaderLen+5, HeaderLen+5+TagLen)
	copy(buf[HeaderLen:], "hello")
	msg, err := a.Seal(buf[:0], buf[HeaderLen:HeaderLen+5])
	if err != nil {
		t.Fatal(err)
	}
	if &msg[0] != &buf[0] {
		t.Fatal("Seal did not reuse dst")
	}
	pt, err := b.Open(msg[HeaderLen:HeaderLen], msg)
	if err != nil || string(pt) != "hello" {
		t.Fatalf("in-place Open = %q, %v", pt, err)
	}
}

func TestTampering(t *testing.T) {
	a, b := sessionPair(t)
	msg := seal(t, a, "attack at dawn")
	var wantForged, wantMalformed uint64
	for i := range msg {
		for bit := range 8 {
			c := bytes.Clone(msg)
			c[i] ^= 1 << bit
			_, err := b.Open(nil, c)
			switch {
			case errors.Is(err, ErrForged):
				wantForged++
			case errors.Is(err, ErrMalformed):
				wantMalformed++
			case errors.Is(err, ErrTooOld), errors.Is(err, ErrReplayed):
				t.Fatalf("flip %d.%d: %v", i, bit, err)
			default:
				t.Fatalf("flip byte %d bit %d: Open = %v, want refusal", i, bit, err)
			}
		}
	}
	// Truncation, extension and garbage.
	for n := range len(msg) {
		_, err := b.Open(nil, msg[:n])
		if n < Overhead && !errors.Is(err, ErrMalformed) || n >= Overhead && !errors.Is(err, ErrForged) {
			t.Fatalf("truncated to %d: %v", n, err)
		}
		if n < Overhead {
			wantMalformed++
		} else {
			wantForged++
		}
	}
	wantRefused(t, b, append(bytes.Clone(msg), 0), ErrForged)
	wantForged++
	for range 100 {
		g := make([]byte, mrand.IntN(200))
		rand.Read(g)
		if _, err := b.Open(nil, g); err == nil {
			t.Fatal("garbage accepted")
		} else if errors.Is(err, ErrForged) {
			wantForged++
		} else if errors.Is(err, ErrMalformed) {
			wantMalformed++
		} else {
			t.Fatalf("garbage: %v", err)
		}
	}
	wantRefused(t, b, make([]byte, MaxMessage+1), ErrMalformed)
	wantMalformed++
	// A message sealed by the receiver itself (wrong direction key).
	wantRefused(t, b, seal(t, b, "echo"), ErrForged)
	wantForged++
	// The genuine message still opens after all of that.
	wantOpen(t, b, msg, "attack at dawn")
	st := b.Stats()
	if st.Forged != wantForged || st.Malformed != wantMalformed || st.Opened != 1 {
		t.Fatalf("stats %+v, want forged %d malformed %d opened 1", st, wantForged, wantMalformed)
	}
}

func TestReplayAndReorder(t *testing.T) {
	a, b := sessionPair(t)
	msgs := make([][]byte, ReplayWindow+100)
	for i := range msgs {
		msgs[i] = seal(t, a, fmt.Sprint(i))
	}
	// Reordered within the window: newest first, then older ones.
	wantOpen(t, b, msgs[ReplayWindow-1], fmt.Sprint(ReplayWindow-1))
	for i := ReplayWindow - 2; i >= 0; i-- {
		wantOpen(t, b, msgs[i], fmt.Sprint(i))
	}
	wantRefused(t, b, msgs[5], ErrReplayed)
	wantRefused(t, b, msgs[ReplayWindow-1], ErrReplayed)
	// Jump ahead to ReplayWindow+99: the unseen ones after ReplayWindow-1
	// are in the window, 100 is in the window but seen, 99 and older are too
	// old.
	last := len(msgs) - 1
	wantOpen(t, b, msgs[last], fmt.Sprint(last))
	for i := last - 1; i >= ReplayWindow; i-- {
		wantOpen(t, b, msgs[i], fmt.Sprint(i))
	}
	wantRefused(t, b, msgs[last-ReplayWindow+1], ErrReplayed)
	wantRefused(t, b, msgs[last-ReplayWindow], ErrTooOld)
	wantRefused(t, b, msgs[0], ErrTooOld)
	st := b.Stats()
	if st.Opened != uint64(len(msgs)) || st.Replayed != 3 || st.TooOld != 2 || st.Forged != 0 {
		t.Fatalf("stats %+v", st)
	}
}

func TestWindowEdge(t *testing.T) {
	a, b := sessionPair(t)
	const top = ReplayWindow + 76
	msgs := make([][]byte, top+1)
	for i := range msgs {
		msgs[i] = seal(t, a, fmt.Sprint(i))
	}
	wantOpen(t, b, msgs[top], fmt.Sprint(top))
	wantOpen(t, b, msgs[top-ReplayWindow+1], fmt.Sprint(top-ReplayWindow+1))
	wantRefused(t, b, msgs[top-ReplayWindow], ErrTooOld)
}

func TestReplayFilterRandom(t *testing.T) {
	// Compare the bitmap against a map-based model on random nonces.
	var f replayFilter
	seen := map[uint64]bool{}
	var last uint64
	for i := range 200000 {
		n := last + 50 - uint64(mrand.IntN(ReplayWindow+200))
		if i%1000 == 0 {
			n = last + uint64(mrand.IntN(5000))
		}
		if n > math.MaxUint64/2 { // wrapped below zero
			n = uint64(mrand.IntN(10))
		}
		var want error
		switch {
		case n > last || (!seen[n] && last-n < ReplayWindow):
		case seen[n] && last-n < ReplayWindow:
			want = ErrReplayed
		default:
			want = ErrTooOld
		}
		if i == 0 {
			want = nil // nothing seen yet
		}
		if got := f.check(n); got != want {
			t.Fatalf("step %d: check(%d) last %d = %v, want %v", i, n, last, got, want)
		}
		if want == nil {
			f.accept(n)
			seen[n] = true
			last = max(last, n)
		}
	}
}

func TestClose(t *testing.T) {
	a, b := sessionPair(t)
	data := seal(t, a, "last words")

	// Forged closes: random tag, and a data message relabelled as close.
	forged := make([]byte, Overhead)
	forged[0] = byte(Close)
	forged[8] = 7
	rand.Read(forged[HeaderLen:])
	wantRefused(t, b, forged, ErrForged)
	relabelled := bytes.Clone(data)
	relabelled[0] = byte(Close)
	wantRefused(t, b, relabelled, ErrMalformed)
	// A genuine close with its tag truncated or its type relabelled as data.
	closeMsg, err := a.SealClose(nil)
	if err != nil {
		t.Fatal(err)
	}
	if TypeOf(closeMsg) != Close || len(closeMsg) != Overhead {
		t.Fatalf("close message %x", closeMsg)
	}
	wantRefused(t, b, closeMsg[:Overhead-1], ErrMalformed)
	asData := bytes.Clone(closeMsg)
	asData[0] = byte(Data)
	wantRefused(t, b, asData, ErrForged)
	if st := b.Stats(); st.Forged != 2 || st.Malformed != 2 {
		t.Fatalf("stats %+v", st)
	}

	// The session still works; then the genuine close closes it.
	wantOpen(t, b, data, "last words")
	if _, err := b.Open(nil, closeMsg); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Open(close) = %v, want net.ErrClosed", err)
	}
	if _, err := b.Open(nil, data); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Open after close = %v, want net.ErrClosed", err)
	}
	if _, err := a.Seal(nil, []byte("x")); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Seal after SealClose = %v, want net.ErrClosed", err)
	}
	if _, err := a.SealClose(nil); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("second SealClose = %v, want net.ErrClosed", err)
	}
	// The other direction is independent.
	wantOpen(t, a, seal(t, b, "still here"), "still here")
}

// advance moves s's sending side to nonce n, deriving the key of n's epoch
// as the sender would have after sealing n messages.
func advance(s *Session, n uint64) {
	s.send.mu.Lock()
	defer s.send.mu.Unlock()
	for e := s.send.next >> rekeyShift; e < n>>rekeyShift; e++ {
		s.send.key = rekey(&s.send.key)
	}
	s.send.aead = newGCM(&s.send.key)
	s.send.next = n
}

func TestRekeyBoundaryReorder(t *testing.T) {
	a, b := sessionPair(t)
	wantOpen(t, b, seal(t, a, "epoch 0"), "epoch 0")
	advance(a, RekeyInterval-20)
	msgs := make([][]byte, 40) // nonces RekeyInterval-20 .. RekeyInterval+19
	for i := range msgs {
		msgs[i] = seal(t, a, fmt.Sprint(i))
	}
	// Deliver in a shuffled order, crossing the boundary both ways.
	order := mrand.Perm(len(msgs))
	for _, i := range order {
		wantOpen(t, b, msgs[i], fmt.Sprint(i))
	}
	if b.recv.epoch != 1 || b.recv.prev == nil {
		t.Fatalf("receiver epoch %d, want 1 with previous key kept", b.recv.epoch)
	}
	for _, i := range []int{0, 19, 20, 39} {
		wantRefused(t, b, msgs[i], ErrReplayed)
	}
	// A forged message in the next epoch does not move the receiver.
	f := bytes.Clone(msgs[39])
	f[3] = 0x02 // nonce epoch 2... and wrong tag
	f[len(f)-1] ^= 1
	wantRefused(t, b, f, ErrForged)
	if b.recv.epoch != 1 {
		t.Fatal("forged message advanced the epoch")
	}
	// Skipping several epochs (long loss) still works, within maxEpochSkip.
	advance(a, 3*RekeyInterval+5)
	wantOpen(t, b, seal(t, a, "epoch 3"), "epoch 3")
	// Too far ahead is refused without deriving keys.
	advance(a, (3+maxEpochSkip+1)*RekeyInterval)
	wantRefused(t, b, seal(t, a, "too far"), ErrForged)
	if b.recv.epoch != 3 {
		t.Fatalf("epoch %d, want 3", b.recv.epoch)
	}
}

func TestRekeySequential(t *testing.T) {
	if testing.Short() {
		t.Skip("seals two rekey intervals")
	}
	a, b := sessionPair(t)
	var msg, pt, late []byte
	payload := []byte("payload")
	for i := range 2*RekeyInterval + 10 {
		var err error
		msg, err = a.Seal(msg[:0], payload)
		if err != nil {
			t.Fatal(err)
		}
		// Hold back the last message of each epoch and deliver it a few
		// messages into the next one, with the previous epoch's key.
		if i%RekeyInterval == RekeyInterval-1 {
			late = bytes.Clone(msg)
			continue
		}
		if pt, err = b.Open(pt[:0], msg); err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		if late != nil && i%RekeyInterval == 5 {
			if pt, err = b.Open(pt[:0], late); err != nil {
				t.Fatalf("late message before %d: %v", i, err)
			}
			late = nil
		}
	}
	if st := b.Stats(); st.Opened != 2*RekeyInterval+10 || b.recv.epoch != 2 {
		t.Fatalf("stats %+v epoch %d", st, b.recv.epoch)
	}
}

func TestNonceExhausted(t *testing.T) {
	a, b := sessionPair(t)
	a.send.next = math.MaxUint64
	if _, err := a.Seal(nil, nil); err == nil {
		t.Fatal("sealed with the reserved nonce")
	}
	m := make([]byte, Overhead)
	m[0] = byte(Data)
	for i := 1; i < HeaderLen; i++ {
		m[i] = 0xff
	}
	wantRefused(t, b, m, ErrMalformed)
}

func TestConcurrentSealOpen(t *testing.T) {
	a, b := sessionPair(t)
	const senders, perSender = 4, 500
	ch := make(chan []byte, senders*perSender)
	var wg sync.WaitGroup
	for range senders {
		wg.Go(func() {
			buf := make([]byte, 0, 64)
			for i := range perSender {
				msg, err := a.Seal(buf[:0], []byte(fmt.Sprint(i)))
				if err != nil {
					t.Error(err)
					return
				}
				ch <- bytes.Clone(msg)
			}
		})
	}
	// Opens run concurrently with the Seals and with each other, and the
	// opposite direction runs at the same time.
	var opened sync.WaitGroup
	errs := make(chan error, senders*perSender)
	for range 4 {
		opened.Go(func() {
			for msg := range ch {
				if _, err := b.Open(nil, msg); err != nil {
					errs <- err
				}
			}
		})
	}
	wg.Go(func() {
		for range 200 {
			m, err := b.Seal(nil, []byte("back"))
			if err != nil {
				t.Error(err)
				return
			}
			if _, err := a.Open(nil, m); err != nil {
				t.Error(err)
				return
			}
			_ = a.Stats()
		}
	})
	wg.Wait()
	close(ch)
	opened.Wait()
	close(errs)
	// A sender preempted between Seal and its channel send can fall more
	// than ReplayWindow behind: such messages are legitimately too old.
	// Anything else (a reused nonce shows up as replayed or forged) is a bug.
	for err := range errs {
		if !errors.Is(err, ErrTooOld) {
			t.Errorf("Open: %v", err)
		}
	}
	if st := b.Stats(); st.Opened+st.TooOld != senders*perSender || st.Replayed+st.Forged+st.Malformed != 0 {
		t.Fatalf("stats %+v, want %d opened or too old and nothing else", st, senders*perSender)
	}
}

func TestZeroAllocs(t *testing.T) {
	a, b := sessionPair(t)
	pt := make([]byte, 1024)
	msg := make([]byte, 0, len(pt)+Overhead)
	out := make([]byte, 0, len(pt))
	allocs := testing.AllocsPerRun(1000, func() {
		var err error
		msg, err = a.Seal(msg[:0], pt)
		if err != nil {
			t.Fatal(err)
		}
		out, err = b.Open(out[:0], msg)
		if err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Fatalf("Seal+Open: %v allocs, want 0", allocs)
	}
	// Refusals do not allocate either.
	allocs = testing.AllocsPerRun(1000, func() {
		if _, err := b.Open(out[:0], msg); err == nil {
			t.Fatal("replay accepted")
		}
	})
	if allocs != 0 {
		t.Fatalf("refused Open: %v allocs, want 0", allocs)
	}
}
