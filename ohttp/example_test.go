package ohttp_test

import (
	"context"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"

	"github.com/conftrace/conftrace/bhttp"
	"github.com/conftrace/conftrace/ohttp"
)

// A client sends a padded exposure poll to a gateway serving a hybrid and
// an X25519 key; the gateway serves it with an ordinary http.Handler.
func Example() {
	// Gateway setup: one key per suite, published as a key list.
	hybrid, err := ohttp.GenerateKey(1, ohttp.KEMMLKEM768X25519)
	if err != nil {
		log.Fatal(err)
	}
	classic, err := ohttp.GenerateKey(2, ohttp.KEMX25519)
	if err != nil {
		log.Fatal(err)
	}
	gw, err := ohttp.NewGateway(hybrid, classic)
	if err != nil {
		log.Fatal(err)
	}
	keyList, err := ohttp.MarshalKeyConfigs(gw.KeyConfigs())
	if err != nil {
		log.Fatal(err)
	}

	// Client: pick a key, pad and encapsulate the request.
	cfgs, err := ohttp.ParseKeyConfigs(keyList) // authenticated by attestation
	if err != nil {
		log.Fatal(err)
	}
	cfg, err := ohttp.SelectKeyConfig(cfgs)
	if err != nil {
		log.Fatal(err)
	}
	req := &bhttp.Request{Method: "POST", Scheme: "https", Authority: "backend.example", Path: "/v1/poll", Content: []byte("tuples")}
	plain, err := req.MarshalPadded()
	if err != nil {
		log.Fatal(err)
	}
	encReq, client, err := ohttp.EncapsulateRequest(cfg, plain)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("client uses %v key %d; request is %d bytes on the wire\n", cfg.KEM, cfg.KeyID, len(encReq))

	// Gateway: decapsulate, serve, pad and encapsulate the response.
	inner, server, err := gw.DecapsulateRequest(encReq)
	if err != nil {
		log.Fatal(err) // a real gateway answers 400 without encryption
	}
	breq, err := bhttp.ParseRequest(inner, 0)
	if err != nil {
		log.Fatal(err) // a real gateway answers an encapsulated 400
	}
	hreq, err := breq.HTTPRequest(context.Background())
	if err != nil {
		log.Fatal(err)
	}
	rec := httptest.NewRecorder()
	http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "not exposed")
	}).ServeHTTP(rec, hreq)
	bresp, err := bhttp.FromHTTPResponse(rec.Result(), 0)
	if err != nil {
		log.Fatal(err)
	}
	respPlain, err := bresp.MarshalPadded()
	if err != nil {
		log.Fatal(err)
	}
	encResp, err := server.EncapsulateResponse(respPlain)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("response is %d bytes on the wire\n", len(encResp))

	// Client: decapsulate and read the response.
	got, err := client.DecapsulateResponse(encResp)
	if err != nil {
		log.Fatal(err)
	}
	resp, err := bhttp.ParseResponse(got, 0)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%d %s\n", resp.Status, resp.Content)
	// Output:
	// client uses MLKEM768-X25519 key 1; request is 2167 bytes on the wire
	// response is 1072 bytes on the wire
	// 200 not exposed
}
