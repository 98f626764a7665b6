package gaen_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"fmt"
	"log"
	"time"

	"github.com/conftrace/conftrace/enid"
	"github.com/conftrace/conftrace/gaen"
)

// A key server signs an export with Write; the importer opens it with the
// server's public key, skips the keys it cannot use and derives the
// identifiers of the others.
func Example() {
	// The foreign key server's signing key. The importer knows only its
	// public half, usually from gaen.ParsePublicKeyPEM.
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		log.Fatal(err)
	}
	day := enid.IntervalOf(time.Date(2020, 10, 1, 0, 0, 0, 0, time.UTC))
	file, err := gaen.Write(&gaen.Export{
		Region: "DE",
		Start:  time.Date(2020, 10, 2, 0, 0, 0, 0, time.UTC),
		End:    time.Date(2020, 10, 3, 0, 0, 0, 0, time.UTC),
		Keys: []gaen.Key{
			{TEK: enid.NewTEK(), RollingStart: day, RollingPeriod: 144, ReportType: gaen.ConfirmedTest},
			{TEK: enid.NewTEK(), RollingStart: day, RollingPeriod: 0}, // broken: a period of no intervals
		},
	}, gaen.SigningKey{KeyID: "262", KeyVersion: "v1", Key: priv})
	if err != nil {
		log.Fatal(err)
	}

	trusted := []gaen.VerifyingKey{{Name: "de-cwa", KeyID: "262", KeyVersion: "v1", Key: &priv.PublicKey}}
	exp, err := gaen.Open(file, trusted, gaen.Limits{})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%s export of %s, signed by %s\n", exp.Region, exp.Start.Format(time.DateOnly), exp.SignedBy)
	var rpis []enid.RPI
	for _, k := range exp.Keys {
		if err := k.Valid(); err != nil {
			fmt.Println("skipped:", err) // count it, and go on
			continue
		}
		key, err := enid.NewKey(k.TEK, k.RollingStart, k.RollingPeriod)
		if err != nil {
			log.Fatal(err)
		}
		rpis = key.AppendRPIs(rpis)
	}
	fmt.Printf("%d identifiers to match\n", len(rpis))

	// Any other key, or a changed byte, and the file is refused whole.
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	trusted[0].Key = &other.PublicKey
	_, err = gaen.Open(file, trusted, gaen.Limits{})
	fmt.Println(errors.Is(err, gaen.ErrBadSignature))
	// Output:
	// DE export of 2020-10-02, signed by de-cwa
	// skipped: gaen: invalid key: rolling period 0 is not in 1..144
	// 144 identifiers to match
	// true
}
