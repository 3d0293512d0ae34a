// Command probe is the local cluster's test image: one static program that does what the real
// node's tests need from a pod, without a shell or a distribution.
//
//	probe echo WORDS...         print the words and exit 0
//	probe write FILE WORDS...   write the words into FILE and exit 0
//	probe alloc MIB             allocate and touch MIB MiB, 16 MiB at a time, then sleep
//	probe listen PORT           answer each TCP connection on PORT with the host name
//	probe connect HOST PORT     resolve HOST, connect (retrying for 60 s), print the answer
//	probe apiserver             ask the apiserver, through the kubernetes Service and with the
//	                            pod's service-account token, who this pod is
//	probe sleep                 sleep until terminated
package main

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"
)

const accountDir = "/var/run/secrets/kubernetes.io/serviceaccount"

func main() {
	if len(os.Args) < 2 {
		fail("usage: probe echo|write|alloc|listen|connect|apiserver|sleep ARGS...")
	}
	args := os.Args[2:]
	switch os.Args[1] {
	case "echo":
		fmt.Println(joined(args))
	case "write":
		if err := os.WriteFile(arg(args, 0), []byte(joined(args[1:])+"\n"), 0o644); err != nil {
			fail(err.Error())
		}
		fmt.Println("wrote", args[0])
	case "alloc":
		alloc(atoi(arg(args, 0)))
	case "listen":
		listen(arg(args, 0))
	case "connect":
		connect(arg(args, 0), arg(args, 1))
	case "apiserver":
		apiserver()
	case "sleep":
		sleep()
	default:
		fail("unknown command " + os.Args[1])
	}
}

func fail(message string) {
	fmt.Fprintln(os.Stderr, "probe:", message)
	os.Exit(1)
}

func arg(args []string, i int) string {
	if i >= len(args) {
		fail("missing argument")
	}
	return args[i]
}

func atoi(text string) int {
	n, err := strconv.Atoi(text)
	if err != nil {
		fail(err.Error())
	}
	return n
}

func joined(words []string) string {
	var out bytes.Buffer
	for i, word := range words {
		if i > 0 {
			out.WriteByte(' ')
		}
		out.WriteString(word)
	}
	return out.String()
}

func sleep() {
	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT)
	<-signals
}

func alloc(mib int) {
	var held [][]byte
	for done := 0; done < mib; done += 16 {
		chunk := make([]byte, 16<<20)
		for i := range chunk {
			chunk[i] = byte(i)
		}
		held = append(held, chunk)
		fmt.Printf("allocated %d MiB\n", done+16)
	}
	fmt.Println("allocated all", len(held))
	sleep()
}

func listen(port string) {
	listener, err := net.Listen("tcp", ":"+port)
	if err != nil {
		fail(err.Error())
	}
	host, _ := os.Hostname()
	fmt.Println("listening on", listener.Addr())
	for {
		conn, err := listener.Accept()
		if err != nil {
			fail(err.Error())
		}
		fmt.Fprintf(conn, "hello from %s\n", host)
		conn.Close()
	}
}

func connect(host, port string) {
	deadline := time.Now().Add(60 * time.Second)
	for {
		err := tryConnect(host, port)
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			fail(err.Error())
		}
		fmt.Println("retrying:", err)
		time.Sleep(time.Second)
	}
}

func tryConnect(host, port string) error {
	addresses, err := net.LookupHost(host)
	if err != nil {
		return err
	}
	fmt.Println("resolved", host, "to", addresses)
	conn, err := net.DialTimeout("tcp", net.JoinHostPort(host, port), 5*time.Second)
	if err != nil {
		return err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	answer, err := io.ReadAll(conn)
	if err != nil {
		return err
	}
	fmt.Print("answer: ", string(answer))
	return nil
}

func apiserver() {
	token, err := os.ReadFile(accountDir + "/token")
	if err != nil {
		fail(err.Error())
	}
	authority, err := os.ReadFile(accountDir + "/ca.crt")
	if err != nil {
		fail(err.Error())
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(authority)
	client := &http.Client{
		Timeout:   10 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}},
	}
	server := net.JoinHostPort(os.Getenv("KUBERNETES_SERVICE_HOST"), os.Getenv("KUBERNETES_SERVICE_PORT"))
	body := `{"apiVersion":"authentication.k8s.io/v1","kind":"SelfSubjectReview"}`
	url := "https://" + server + "/apis/authentication.k8s.io/v1/selfsubjectreviews"
	var last error
	for attempt := 0; attempt < 30; attempt++ {
		request, _ := http.NewRequest(http.MethodPost, url, bytes.NewBufferString(body))
		request.Header.Set("Authorization", "Bearer "+string(bytes.TrimSpace(token)))
		request.Header.Set("Content-Type", "application/json")
		response, err := client.Do(request)
		if err == nil {
			answer, _ := io.ReadAll(response.Body)
			response.Body.Close()
			fmt.Printf("%s %d %s\n", server, response.StatusCode, answer)
			if response.StatusCode == http.StatusCreated || response.StatusCode == http.StatusOK {
				return
			}
			os.Exit(1)
		}
		last = err
		fmt.Println("retrying:", err)
		time.Sleep(time.Second)
	}
	fail(last.Error())
}
