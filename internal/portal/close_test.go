package portal_test

import (
	"io"
	"net"
	"testing"
	"time"
)

func TestManyIdleFlowsClose(t *testing.T) {
	s := serve(t, func(c *net.TCPConn) { io.Copy(c, c) })
	w := newWorld(t, s.addr())
	const n = 1000
	var cs []net.Conn
	buf := make([]byte, 64)
	for i := 0; i < n; i++ {
		c, err := net.Dial("tcp", w.inlet.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		c.Write(buf)
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.ReadFull(c, buf); err != nil {
			t.Fatal(i, err)
		}
		cs = append(cs, c)
	}
	start := time.Now()
	for _, c := range cs {
		c.Close()
	}
	waitFor(t, 60*time.Second, "flows closed", func() bool { return len(w.sp.Outlets()[0].Flows()) == 0 && len(w.inlet.Flows()) == 0 })
	t.Logf("%d flows closed in %v", n, time.Since(start))
}
