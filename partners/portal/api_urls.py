from django.urls import path

from partners.portal import api

app_name = "api"

urlpatterns = [
    path("files", api.files_api, name="files"),
    path("receipts/<int:pk>", api.receipt_api, name="receipt"),
    path("dry-run", api.dry_run_api, name="dry_run"),
    path("optouts", api.optouts_api, name="optouts"),
]
