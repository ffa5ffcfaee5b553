"""ServerApp: FedLedger (or FedAvg / FedMedian, `strategy` in the run config) over the app's run config."""

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from fedledger.flower.server import run_server

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    run_server(grid, context)
