package netstack

import "fmt"

// DebugStats formats gVisor's counters of interest.
func DebugStats(st *Stack) string {
	s := st.s.Stats()
	return fmt.Sprintf("ip rcv=%d invalidDst=%d malformed=%d delivered=%d; tcp valid=%d invalid=%d csumErr=%d fwdDrop=%d; nic malformedL4=%d",
		s.IP.PacketsReceived.Value(), s.IP.InvalidDestinationAddressesReceived.Value(), s.IP.MalformedPacketsReceived.Value(), s.IP.PacketsDelivered.Value(),
		s.TCP.ValidSegmentsReceived.Value(), s.TCP.InvalidSegmentsReceived.Value(), s.TCP.ChecksumErrors.Value(), s.TCP.ForwardMaxInFlightDrop.Value(),
		s.NICs.MalformedL4RcvdPackets.Value())
}

// SetForcePlain selects the plain (wgtun.Device Read/Write) link mode for
// stacks created afterwards.
func SetForcePlain(v bool) { forcePlain = v }
