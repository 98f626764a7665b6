package store

import (
	"errors"
	"strings"
	"testing"
)

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		name  string
		batch Batch
		ok    bool
	}{
		{"empty batch", Batch{}, true},
		{"typical", Batch{
			Checks: []Check{{Table: "upload-auth", Key: []byte{1}, Exists: true}},
			Ops:    []Op{{Record: Record{Table: "tuples/v1", Key: []byte{0}, Day: 1, Value: []byte("x")}}},
		}, true},
		{"longest everything", Batch{Ops: []Op{{Record: Record{
			Table: strings.Repeat("a", MaxTableLen), Key: make([]byte, MaxKeyLen), Value: make([]byte, MaxValueLen)}}}}, true},
		{"delete ignores value", Batch{Ops: []Op{{Record: Record{Table: "t", Key: []byte{1}, Value: make([]byte, MaxValueLen+1)}, Delete: true}}}, true},
		{"empty table", Batch{Ops: []Op{{Record: Record{Key: []byte{1}}}}}, false},
		{"long table", Batch{Ops: []Op{{Record: Record{Table: strings.Repeat("a", MaxTableLen+1), Key: []byte{1}}}}}, false},
		{"table with quote", Batch{Ops: []Op{{Record: Record{Table: "t'", Key: []byte{1}}}}}, false},
		{"empty key", Batch{Ops: []Op{{Record: Record{Table: "t"}}}}, false},
		{"long key", Batch{Ops: []Op{{Record: Record{Table: "t", Key: make([]byte, MaxKeyLen+1)}}}}, false},
		{"large value", Batch{Ops: []Op{{Record: Record{Table: "t", Key: []byte{1}, Value: make([]byte, MaxValueLen+1)}}}}, false},
		{"bad check", Batch{Checks: []Check{{Table: "t"}}}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.batch.Validate()
			if tc.ok && err != nil {
				t.Errorf("Validate = %v", err)
			}
			if !tc.ok && !errors.Is(err, ErrInvalid) {
				t.Errorf("Validate = %v, want ErrInvalid", err)
			}
		})
	}
	var nilBatch *Batch
	if err := nilBatch.Validate(); err != nil {
		t.Errorf("nil batch: %v", err)
	}
}

func TestBatchBuilders(t *testing.T) {
	var b Batch
	b.MustExist("auth", []byte("tok"))
	b.MustNotExist("daykeys", []byte{1})
	b.Delete("auth", []byte("tok"))
	b.Put("tuples", []byte("u"), 7, []byte("v"))
	if len(b.Checks) != 2 || !b.Checks[0].Exists || b.Checks[1].Exists || b.Checks[1].Table != "daykeys" {
		t.Errorf("checks = %+v", b.Checks)
	}
	if len(b.Ops) != 2 || !b.Ops[0].Delete || b.Ops[1].Delete || b.Ops[1].Day != 7 || string(b.Ops[1].Value) != "v" {
		t.Errorf("ops = %+v", b.Ops)
	}
}

func TestConflictError(t *testing.T) {
	var err error = &ConflictError{Check: Check{Table: "auth", Key: []byte{0xab}, Exists: true}}
	if !errors.Is(err, ErrConflict) {
		t.Error("ConflictError does not match ErrConflict")
	}
	if errors.Is(err, ErrNotFound) || errors.Is(err, ErrInvalid) {
		t.Error("ConflictError matches other sentinels")
	}
	if msg := err.Error(); !strings.Contains(msg, "auth") || !strings.Contains(msg, "ab") || !strings.Contains(msg, "must exist") {
		t.Errorf("message %q does not say which check failed", msg)
	}
}
