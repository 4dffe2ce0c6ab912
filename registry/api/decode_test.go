package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/webhookd/webhookd/registry"
)

func TestDecodeCreate(t *testing.T) {
	tests := []struct {
		name   string
		body   string
		want   registry.Input
		status int      // 0 = success
		fields []string // for 422
	}{
		{"full", `{"url":"https://x.example/","eventType":"workflowRun.started","workflowId":"W1"}`,
			registry.Input{URL: "https://x.example/", EventType: "workflowRun.started", WorkflowID: "W1"}, 0, nil},
		{"unknown fields ignored", ` {"x":[1,{"y":null}],"url":"u"} ` + "\n", registry.Input{URL: "u"}, 0, nil},
		{"nulls are absent", `{"url":null,"eventType":null,"workflowId":null}`, registry.Input{}, 0, nil},
		{"duplicate key, last wins", `{"url":"a","url":"b"}`, registry.Input{URL: "b"}, 0, nil},
		{"escapes", `{"url":"https://x.example/\u00e9"}`, registry.Input{URL: "https://x.example/é"}, 0, nil},
		{"type errors keep good fields", `{"url":1,"eventType":"workflowRun.failed","workflowId":false}`,
			registry.Input{EventType: "workflowRun.failed"}, 422, []string{"url", "workflowId"}},
		{"empty", ``, registry.Input{}, 400, nil},
		{"whitespace", " \n\t", registry.Input{}, 400, nil},
		{"truncated", `{"url":"a"`, registry.Input{}, 400, nil},
		{"array", `[]`, registry.Input{}, 400, nil},
		{"number", `12`, registry.Input{}, 400, nil},
		{"null", `null`, registry.Input{}, 400, nil},
		{"trailing object", `{}{}`, registry.Input{}, 400, nil},
		{"trailing bracket", `{}]`, registry.Input{}, 400, nil},
		{"trailing token", `{} true`, registry.Input{}, 400, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			in, err := decodeCreate(strings.NewReader(tc.body))
			if tc.status == 0 {
				if err != nil {
					t.Fatalf("err = %v", err)
				}
			} else {
				var ae *apiError
				if !errors.As(err, &ae) || ae.Status != tc.status {
					t.Fatalf("err = %v, want status %d", err, tc.status)
				}
				for _, f := range tc.fields {
					if _, ok := ae.Details[f]; !ok {
						t.Fatalf("details %v lack %q", ae.Details, f)
					}
				}
				if tc.status != 422 {
					return
				}
			}
			if in.Input != tc.want {
				t.Fatalf("input = %+v, want %+v", in.Input, tc.want)
			}
		})
	}
}

func TestDecodeCreateBodyLimit(t *testing.T) {
	body := `{"url":"` + strings.Repeat("a", 100) + `"}`
	for _, limit := range []int64{10, int64(len(body)) - 1} {
		lr := http.MaxBytesReader(httptest.NewRecorder(), io.NopCloser(strings.NewReader(body)), limit)
		_, err := decodeCreate(lr)
		var ae *apiError
		if !errors.As(err, &ae) || ae.Status != http.StatusRequestEntityTooLarge {
			t.Fatalf("limit %d: err = %v, want 413", limit, err)
		}
	}
	// Trailing whitespace beyond the limit also counts.
	lr := http.MaxBytesReader(httptest.NewRecorder(), io.NopCloser(strings.NewReader(`{}`+strings.Repeat(" ", 50))), 10)
	if _, err := decodeCreate(lr); err == nil {
		t.Fatal("over-limit trailing whitespace accepted")
	}
}

func FuzzDecodeCreate(f *testing.F) {
	for _, s := range []string{
		validBody,
		`{}`, `{"url":5}`, `{"url":"a","eventType":"b","workflowId":"c"}`, `null`, `[]`, `""`, ``,
		`{"url":"a"} x`, `{"url":"\ud800"}`, `{"a":{"b":[1,2,{"c":null}]}}`, `{"url":null}`,
		"{\"url\":\"\xff\"}", `{"eventType":["x"]}`, `{"workflowId":{"x":1}}`, `{`, `}`, `{"url":"a",}`,
		strings.Repeat("[", 20000),
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		in, err := decodeCreate(bytes.NewReader(data))
		if err == nil {
			// Accepted bodies are exactly one JSON object.
			var obj map[string]json.RawMessage
			if e := json.Unmarshal(data, &obj); e != nil || obj == nil {
				t.Fatalf("accepted %q (%+v) which is not one JSON object: %v", data, in, e)
			}
			return
		}
		var ae *apiError
		if !errors.As(err, &ae) {
			t.Fatalf("error %T %v is not *apiError", err, err)
		}
		if ae.Status < 400 || ae.Status > 499 || ae.Code == "" {
			t.Fatalf("error %+v is not a 4xx with a code", ae)
		}
		if ae.Status == http.StatusUnprocessableEntity && len(ae.Details) == 0 {
			t.Fatalf("422 without field details")
		}
	})
}
