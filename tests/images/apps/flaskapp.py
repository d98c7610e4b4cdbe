"""A minimal Flask app; `flask --app flaskapp run` binds 127.0.0.1:5000 by default, as in real life."""
from flask import Flask, request

app = Flask(__name__)


@app.get("/")
def index():
    return "ok\n"


@app.post("/process")
def process():
    data = request.get_json()  # 400/415 on a wrong Content-Type, as users hit it
    return {"keys": sorted(data)}
