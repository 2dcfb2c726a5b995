from django.contrib.auth import views as auth_views
from django.urls import path, reverse_lazy

from partners.portal import views

app_name = "portal"

urlpatterns = [
    path("", views.files_view, name="home"),
    path("files/", views.files_view, name="files"),
    path("files/status.json", views.files_status_view, name="files_status"),
    path("upload/", views.upload_view, name="upload"),
    path("upload/check-name.json", views.upload_name_check_view, name="upload_check_name"),
    path("upload/process/", views.process_checked_view, name="process_checked"),
    path("receipts/", views.receipts_view, name="receipts"),
    path("receipts/<int:pk>/", views.receipt_view, name="receipt"),
    path("receipts/<int:pk>/workbook/", views.receipt_workbook_view, name="receipt_workbook"),
    path("view-as/<int:pid>/", views.view_as_view, name="view_as"),
    path("api-token/", views.api_token_view, name="api_token"),
    path("api/", views.api_help_view, name="api_help"),
    path("reports/onboarding/", views.onboarding_report_view, name="onboarding_report"),
    path("outbound/", views.outbound_view, name="outbound"),
    path("outbound/<int:pk>/", views.outbound_run_view, name="outbound_run"),
    path(
        "login/",
        auth_views.LoginView.as_view(template_name="portal/login.html"),
        name="login",
    ),
    path("logout/", auth_views.LogoutView.as_view(next_page="portal:login"), name="logout"),
    path(
        "password-reset/",
        views.reset_rate_limited(
            views.PasswordResetView.as_view(
                template_name="portal/password_reset.html",
                email_template_name="portal/password_reset_email.txt",
                success_url=reverse_lazy("portal:password_reset_done"),
            )
        ),
        name="password_reset",
    ),
    path(
        "password-reset/sent/",
        auth_views.PasswordResetDoneView.as_view(
            template_name="portal/message.html",
            extra_context={
                "message": "If that address has an account, a link to choose a new password"
                " is on its way."
            },
        ),
        name="password_reset_done",
    ),
    path(
        "password-reset/<uidb64>/<token>/",
        auth_views.PasswordResetConfirmView.as_view(
            template_name="portal/password_reset_confirm.html",
            success_url=reverse_lazy("portal:password_reset_complete"),
        ),
        name="password_reset_confirm",
    ),
    path(
        "password-reset/done/",
        auth_views.PasswordResetCompleteView.as_view(
            template_name="portal/message.html",
            extra_context={"message": "Your password is set. You can log in."},
        ),
        name="password_reset_complete",
    ),
]
