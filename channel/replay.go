package channel

// ReplayWindow is how far behind the highest accepted nonce a message may
// arrive and still be accepted (once). Older messages are refused as too
// old. It is far below RekeyInterval, so an accepted message is always in
// the current or the previous key epoch.
//
// Messages of one channel are sealed by many senders (every flow's pump)
// and only then queued on the connection, so one sender descheduled between
// the two is overtaken by the others: with 1,024 and 50 busy flows under
// -race, a sealed Data message now and then fell behind the window and its
// flow reset (portal TestManyConcurrentFlows). 8,192 (1 KiB of bitmap)
// leaves eight times the room; sealing in sending order would remove the
// cause.
const ReplayWindow = 8192

const (
	replayBlockBits = 64
	replayBlocks    = ReplayWindow/replayBlockBits + 1 // one spare block, so a shift clears whole blocks
)

// replayFilter is a sliding-window bitmap over 64-bit nonces, kept as a
// ring of 64-bit blocks (the scheme of RFC 6479, as in wireguard-go's
// replay package). check does not modify the filter; accept records a nonce
// once it has been authenticated, so forgeries cannot move the window.
type replayFilter struct {
	last uint64 // highest accepted nonce
	ring [replayBlocks]uint64
}

func (f *replayFilter) check(n uint64) error {
	if n > f.last {
		return nil
	}
	if f.last-n >= ReplayWindow {
		return ErrTooOld
	}
	blk := (n / replayBlockBits) % replayBlocks
	if f.ring[blk]&(1<<(n%replayBlockBits)) != 0 {
		return ErrReplayed
	}
	return nil
}

func (f *replayFilter) accept(n uint64) {
	blk := n / replayBlockBits
	if n > f.last {
		cur := f.last / replayBlockBits
		diff := min(blk-cur, replayBlocks)
		for i := uint64(1); i <= diff; i++ {
			f.ring[(cur+i)%replayBlocks] = 0
		}
		f.last = n
	}
	f.ring[blk%replayBlocks] |= 1 << (n % replayBlockBits)
}
