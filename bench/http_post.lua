-- wrk: POST a small completion request (bench/http_servers.sh).
wrk.method = "POST"
wrk.body = '{"prompt": "The meaning of life is", "max_tokens": 16, "temperature": 0.8}'
wrk.headers["Content-Type"] = "application/json"
