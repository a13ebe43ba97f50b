package identity

import (
	"bytes"
	"errors"
	"fmt"

	"github.com/fxamacker/cbor/v2"
)

// encMode encodes deterministically (RFC 8949 core deterministic encoding),
// so that one value has one encoding and identifiers and signatures are
// reproducible.
var encMode = mustEncMode()

// decMode decodes untrusted input strictly: small bounds on nesting and
// collection sizes, no indefinite lengths, no tags, no duplicate map keys,
// no unknown fields. Unmarshal also rejects trailing bytes.
var decMode = mustDecMode()

// StrictDecMode is the CBOR decoder every wire and file format of ours
// shares: duplicate keys, indefinite lengths, tags, unknown fields and
// invalid UTF-8 refused, nesting and collection sizes bounded.
var StrictDecMode = decMode

func mustEncMode() cbor.EncMode {
	em, err := cbor.CoreDetEncOptions().EncMode()
	if err != nil {
		panic(err)
	}
	return em
}

func mustDecMode() cbor.DecMode {
	dm, err := cbor.DecOptions{
		DupMapKey:         cbor.DupMapKeyEnforcedAPF,
		MaxNestedLevels:   4,
		MaxArrayElements:  16,
		MaxMapPairs:       16,
		IndefLength:       cbor.IndefLengthForbidden,
		TagsMd:            cbor.TagsForbidden,
		ExtraReturnErrors: cbor.ExtraDecErrorUnknownField,
		UTF8:              cbor.UTF8RejectInvalid,
	}.DecMode()
	if err != nil {
		panic(err)
	}
	return dm
}

var errNonCanonical = errors.New("not in canonical CBOR encoding")

// decodeStrict decodes b into v and requires b to be the canonical encoding
// of the result, so that no two byte strings decode to the same value.
func decodeStrict(b []byte, v any) error {
	if err := decMode.Unmarshal(b, v); err != nil {
		return err
	}
	re, err := encMode.Marshal(v)
	if err != nil {
		return fmt.Errorf("re-encode: %w", err)
	}
	if !bytes.Equal(re, b) {
		return errNonCanonical
	}
	return nil
}
