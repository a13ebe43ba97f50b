package channel

// ReplayWindow is how far behind the highest accepted nonce a message may
// arrive and still be accepted (once). Older messages are refused as too
// old. It is far below RekeyInterval, so an accepted message is always in
// the current or the previous key epoch.
//
// Messages of one channel were once sealed by many senders and only then
// queued, so one sender descheduled between the two was overtaken by the
// others (a Data message now and then fell behind a 1,024 window under
// -race). internal/secure now seals in sending order (Stats.Late counts
// what still arrives out of order); 8,192 (1 KiB of bitmap) stays as room
// for a path that reorders.
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
